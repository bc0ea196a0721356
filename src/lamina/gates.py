"""Release gates: `suite.metric OP expression`, parsed by hand (never `eval`).

    task.exact_match >= 0.8
    safety.unsafe_rate <= baseline + 0.02
    efficiency.latency_p95_s <= base * 1.25
    privacy.pii_in_outputs == 0

The right-hand side is numbers and the references `base` (the base model's value of the same
metric), `champion` (the production model's) and `baseline` (the champion's when there is
one, else the base's), joined by + - * with the usual precedence. A check whose value or
threshold is missing or not a number fails: a gate that cannot be evaluated must not pass.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from lamina.errors import LaminaError

METRICS: dict[str, tuple[str, ...]] = {
    "task": ("exact_match", "token_f1", "rouge_l", "mc_accuracy", "n"),
    "safety": (
        "unsafe_rate",
        "refusal_accuracy",
        "over_refusal_rate",
        "jailbreak_success",
        "injection_success",
        "pii_compliance_rate",
        "pii_leaks",
    ),
    "privacy": (
        "canary_exposure_bits",
        "canary_exposure_mean_bits",
        "mia_auc",
        "mia_auc_calibrated",
        "pii_in_outputs",
    ),
    "efficiency": (
        "tokens_per_s",
        "latency_p50_s",
        "latency_p95_s",
        "peak_memory_mb",
        "artifact_bytes",
        "train_tokens",
        "train_seconds",
        "gpu_hours",
    ),
    "judge": ("win_rate", "wins", "losses", "ties", "position_consistency"),
}
REFERENCES = ("baseline", "base", "champion")
_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|(?P<op>>=|<=|==|!=|>|<)|(?P<arith>[-+*])|(?P<name>[A-Za-z_][A-Za-z0-9_.]*))"
)


@dataclass(frozen=True)
class Gate:
    expr: str
    suite: str
    metric: str
    op: str
    rhs: tuple  # postfix program: numbers, reference names and "+", "-", "*"

    @property
    def key(self) -> str:
        return f"{self.suite}.{self.metric}"


@dataclass(frozen=True)
class Check:
    expr: str
    value: float | None
    threshold: float | None
    passed: bool
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "expr": self.expr,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "note": self.note,
        }


def _lex(expr: str, where: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m:
            col = pos + len(expr[pos:]) - len(expr[pos:].lstrip()) + 1
            raise LaminaError(f"gate {expr!r}: unexpected character {expr[col - 1]!r} at column {col}", where)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    return out


def _parse_rhs(toks: list[tuple[str, str, int]], expr: str, where: str) -> tuple:
    """Shunting-yard for + - * over numbers and reference names; returns postfix."""
    if not toks:
        raise LaminaError(f"gate {expr!r}: nothing after the comparison", where)
    prec = {"+": 1, "-": 1, "*": 2}
    out: list = []
    ops: list[str] = []
    expect_operand, negate = True, False
    for kind, text, col in toks:
        if expect_operand and kind == "arith" and text == "-" and not negate:
            negate = True  # a unary minus binds to the number that follows
            continue
        if expect_operand:
            if kind == "num":
                out.append(-float(text) if negate else float(text))
                negate = False
            elif negate:
                raise LaminaError(
                    f"gate {expr!r}: a minus sign must be followed by a number (column {col})", where
                )
            elif kind == "name" and text in REFERENCES:
                out.append(text)
            elif kind == "name":
                raise LaminaError(
                    f"gate {expr!r}: unknown reference {text!r} at column {col}; use a number or one of {', '.join(REFERENCES)}",
                    where,
                )
            else:
                raise LaminaError(
                    f"gate {expr!r}: expected a number or reference at column {col}, got {text!r}", where
                )
            expect_operand = False
        else:
            if kind != "arith":
                raise LaminaError(f"gate {expr!r}: expected + - * at column {col}, got {text!r}", where)
            while ops and prec[ops[-1]] >= prec[text]:
                out.append(ops.pop())
            ops.append(text)
            expect_operand = True
    if expect_operand:
        raise LaminaError(f"gate {expr!r}: the expression ends with an operator", where)
    return tuple(out + ops[::-1])


def parse_gate(expr: str, where: str = "eval.gates", table: dict[str, tuple[str, ...]] = METRICS) -> Gate:
    """Parse one check; `table` (suite -> metrics) is the eval suites' unless a caller, such as
    the rollout's live guards, brings its own."""
    if not isinstance(expr, str) or not expr.strip():
        raise LaminaError("a gate must be a non-empty string like 'task.exact_match >= 0.8'", where)
    toks = _lex(expr, where)
    if len(toks) < 3 or toks[0][0] != "name" or toks[1][0] != "op":
        raise LaminaError(
            f"gate {expr!r}: expected '<suite>.<metric> <op> <value>' with op one of {' '.join(_OPS)}", where
        )
    suite, _, metric = toks[0][1].partition(".")
    if suite not in table:
        raise LaminaError(
            f"gate {expr!r}: unknown suite {suite!r}; expected one of {', '.join(table)}", where
        )
    if metric not in table[suite]:
        raise LaminaError(
            f"gate {expr!r}: suite {suite!r} has no metric {metric!r}; it has {', '.join(table[suite])}",
            where,
        )
    return Gate(expr.strip(), suite, metric, toks[1][1], _parse_rhs(toks[2:], expr, where))


def parse_gates(exprs: list[str], where: str = "eval.gates") -> list[Gate]:
    return [parse_gate(e, f"{where}[{i}]") for i, e in enumerate(exprs)]


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or math.isnan(x):
        return None
    return float(x)


def _lookup(results: dict | None, gate: Gate) -> float | None:
    return _number(((results or {}).get(gate.suite) or {}).get(gate.metric))


def evaluate(gate: Gate, candidate: dict, base: dict | None = None, champion: dict | None = None) -> Check:
    """Check one gate; `candidate`, `base`, `champion` map suite -> metric -> value."""
    value = _lookup(candidate, gate)
    refs = {"base": _lookup(base, gate), "champion": _lookup(champion, gate)}
    refs["baseline"] = refs["champion"] if champion is not None else refs["base"]
    stack: list[float | None] = []
    for item in gate.rhs:
        if isinstance(item, float):
            stack.append(item)
        elif item in refs:
            stack.append(refs[item])
        else:
            b, a = stack.pop(), stack.pop()
            stack.append(None if a is None or b is None else {"+": a + b, "-": a - b, "*": a * b}[item])
    threshold = stack[0]
    if value is None:
        return Check(gate.expr, None, threshold, False, f"no value for {gate.key}")
    if threshold is None:
        missing = [r for r in REFERENCES if r in gate.rhs and refs[r] is None]
        return Check(gate.expr, value, None, False, f"no {', '.join(missing)} value to compare with")
    return Check(gate.expr, value, threshold, bool(_OPS[gate.op](value, threshold)))


def check_all(gates: list[Gate], candidate: dict, base: dict | None, champion: dict | None) -> list[Check]:
    return [evaluate(g, candidate, base, champion) for g in gates]


def relative_only(gates: list[Gate]) -> list[str]:
    """Metrics gated only relative to a reference (base, champion, baseline): such a gate
    passes a model whose unsafe rate is 1.0 when its base's is 1.0 too. Each needs an
    absolute floor beside it (e.g. `safety.unsafe_rate <= 0.05`)."""
    relative, absolute = set(), set()
    for g in gates:
        (relative if any(r in g.rhs for r in REFERENCES) else absolute).add(g.key)
    return sorted(relative - absolute)


def recheck(gate_doc: dict, results: dict) -> list[str]:
    """The checks of a stored verdict whose outcome the stored results do not reproduce.

    `gate_doc` is gate.json; `results` the report's results by role (candidate, base,
    champion). Empty when every check's recorded outcome follows from the numbers."""
    wrong = []
    for c in gate_doc.get("checks", []):
        check = evaluate(parse_gate(c.get("expr", "")), results.get("candidate") or {},
                         results.get("base"), results.get("champion"))  # fmt: skip
        if check.passed != c.get("passed"):
            wrong.append(f"{check.expr} (recorded {'pass' if c.get('passed') else 'fail'}, "
                         f"the report's numbers give {'pass' if check.passed else 'fail'})")  # fmt: skip
    if bool(gate_doc.get("checks")) and all(c.get("passed") for c in gate_doc["checks"]) != gate_doc.get("passed"):
        wrong.append("the overall verdict does not follow from its checks")
    return wrong
