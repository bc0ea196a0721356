"""Verifiers: programmatic rewards that check a reply instead of judging it.

Each check is a small pure function of one reply (and its reference answer) returning a
score in [0, 1]. The `*_reward` functions at the end wrap them in the shape `grpo.reward`
(and `ppo.reward`) take, `module:function`:

    grpo: {reward: "lamina.train.verifiers:exact_answer_reward"}

they receive the prompts, the replies and the references (the training record's own answer:
a chat record's last reply) and return one float per reply.

The arithmetic checker evaluates with `ast`, not `eval`: only numeric literals, + − × ÷, powers
and unary signs are accepted, with bounds on the text's length, on exponents and on the
size of every intermediate value, so a hostile expression cannot exhaust time or memory.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import unicodedata

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER = re.compile(r"(?:final answer|answer)\s*(?:is\s*:?|:)\s*(.+)", re.IGNORECASE)


def _canonical_number(token: str) -> str | None:
    try:
        value = float(token.replace(",", ""))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return str(int(value)) if value == int(value) and abs(value) < 1e16 else repr(value)


def normalise(text: str) -> str:
    """Case, width, spacing, surrounding quotes and final punctuation folded away; numbers in
    one form (`1,000.50` → `1000.5`, `3.0` → `3`)."""
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    text = text.strip("\"'`*_ ").rstrip(".!?;:").strip()
    text = re.sub(r"\s+", " ", text)
    number = _canonical_number(text) if _NUMBER.fullmatch(text) else None
    return number if number is not None else text


def extract_answer(text: str) -> str:
    """The part of a reply that states its answer: the last \\boxed{...}, else what follows the
    last `answer:` / `answer is`, else the whole reply."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1]
    found = _ANSWER.findall(text)
    return found[-1].strip().splitlines()[0] if found else text


def exact_answer(response: str, reference: str) -> float:
    """1 when the reply's answer equals the reference after normalisation, else 0."""
    return float(normalise(extract_answer(response)) == normalise(reference))


def matches_format(response: str, pattern: str) -> float:
    """1 when the whole reply (outer whitespace aside) matches the regular expression."""
    return float(re.fullmatch(pattern, response.strip(), flags=re.DOTALL) is not None)


def json_valid(response: str, schema: dict | None = None) -> float:
    """1 when the reply is JSON (a ```json fence around it is allowed) that satisfies `schema`
    (JSON Schema, validated with `jsonschema`), else 0. A malformed schema raises."""
    text = response.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    if fence:
        text = fence.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        return 0.0
    if schema is None:
        return 1.0
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return float(validator_cls(schema).is_valid(value))


# --- Arithmetic without eval

MAX_EXPRESSION = 200  # characters
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class NotArithmetic(ValueError):
    """An expression outside the accepted grammar or bounds."""


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        result = node.value
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        result = _UNARY[type(node.op)](_value(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or (left == 0 and right < 0)):
            raise NotArithmetic(f"exponent {right} outside ±{MAX_EXPONENT} (or 0 to a negative power)")
        if isinstance(node.op, ast.Div) and right == 0:
            raise NotArithmetic("division by zero")
        if isinstance(node.op, ast.Pow) and left < 0 and right != int(right):
            raise NotArithmetic("fractional power of a negative number")
        try:
            result = _BINARY[type(node.op)](left, right)
        except OverflowError:
            raise NotArithmetic(f"a value exceeds {MAX_MAGNITUDE:g}") from None
    else:
        raise NotArithmetic(f"{type(node).__name__} is not allowed (numbers, + - * / ** only)")
    if isinstance(result, complex) or not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
        raise NotArithmetic(f"a value exceeds {MAX_MAGNITUDE:g}")
    return result


def evaluate_arithmetic(expression: str) -> float:
    """The value of an arithmetic expression; NotArithmetic for anything else or out of bounds."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if len(text) > MAX_EXPRESSION:
        raise NotArithmetic(f"longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise NotArithmetic("not an expression") from None
    return float(_value(tree.body))


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def arithmetic_answer(response: str, expression: str, rel_tol: float = 1e-6) -> float:
    """1 when the last number in the reply's answer equals the expression's value."""
    want = evaluate_arithmetic(expression)
    got = last_number(extract_answer(response))
    return float(got is not None and math.isclose(got, want, rel_tol=rel_tol, abs_tol=1e-9))


# --- Batch rewards for `grpo.reward` / `ppo.reward`


def exact_answer_reward(prompts: list, responses: list[str], references: list) -> list[float]:
    return [0.0 if ref is None else exact_answer(r, ref) for r, ref in zip(responses, references, strict=True)]


def arithmetic_reward(prompts: list, responses: list[str], references: list) -> list[float]:
    """The reference is the expression to evaluate (or its value); a bad one scores 0."""
    out = []
    for r, ref in zip(responses, references, strict=True):
        try:
            out.append(arithmetic_answer(r, ref) if ref is not None else 0.0)
        except NotArithmetic:
            out.append(0.0)
    return out


def json_reward(prompts: list, responses: list[str], references: list | None = None) -> list[float]:
    return [json_valid(r) for r in responses]


TICKET_FORMAT = r"TEAM: (\S+); ISSUE: (\S+); PRIORITY: (\S+)"
TICKET_FIELDS = ("TEAM", "ISSUE", "PRIORITY")


def ticket_triage(response: str, reference: str) -> float:
    """The bundled ticket task, graded so a policy can climb it from a base that states the
    facts in its own words: 1/6 for each field whose value matches the reference's wherever the
    reply states it, 1/6 for each field written in the answer's form (`KEY: value` then `;` or
    the end), and −0.2 when the reply does not begin with the answer (a preamble such as
    `Note:`). `TEAM: x; ISSUE: y; PRIORITY: z` scores 1."""
    want = re.fullmatch(TICKET_FORMAT, reference.strip())
    if want is None:
        raise ValueError(f"not a ticket answer: {reference!r}")
    text = response.strip()
    score = 0.0
    for key, value in zip(TICKET_FIELDS, want.groups(), strict=True):
        got = re.search(rf"{key}\W*(\w+)", text)
        score += float(got is not None and got.group(1) == value) / 6
        score += float(re.search(rf"{key}: {re.escape(value)}(;|$)", text) is not None) / 6
    return score - 0.2 * (not text.startswith(TICKET_FIELDS[0]))


def ticket_reward(prompts: list, responses: list[str], references: list) -> list[float]:
    return [ticket_triage(r, ref) for r, ref in zip(responses, references, strict=True)]
