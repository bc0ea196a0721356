"""Rollout guards: the eval gates' expression language over live metrics, judged by a pure
function on one window of per-version statistics.

    live.error_rate <= champion + 0.02
    live.latency_p95_s <= champion * 2 + 0.25
    live.feedback_score >= champion - 0.5
    live.prompt_drift <= 0.2               (inputs against the eval set: see rollout/drift.py)

`champion` is the champion's value over the same window (`base` and `baseline` mean the same
here). A verdict is `wait` until the challenger has `min_requests` in the window, then
`breach` if any guard that can be evaluated fails, else `pass`. A guard that cannot be
evaluated (no feedback yet, no champion traffic) is reported, never counted as a breach:
unlike a release gate, a guard acts by itself, and must only act on numbers it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.gates import Check, Gate, evaluate, parse_gate

LIVE: dict[str, tuple[str, ...]] = {
    "live": (
        "requests",
        "error_rate",
        "latency_p50_s",
        "latency_p95_s",
        "guard_trips",
        "guard_trip_rate",
        "pii_trips",
        "pii_rate",
        "refusal_rate",
        "prompt_tokens_p50",
        "prompt_tokens_p95",
        "prompt_drift",
        "prompt_drift_p",
        "feedback_score",
        "feedback_n",
        "agreement_rate",
        "shadow_error_rate",
    )
}


def parse_guards(exprs: list[str], where: str = "rollout.guards") -> list[Gate]:
    return [parse_gate(e, f"{where}[{i}]", table=LIVE) for i, e in enumerate(exprs)]


@dataclass
class Verdict:
    state: str  # wait | pass | breach
    requests: int
    min_requests: int
    checks: list[Check] = field(default_factory=list)

    @property
    def breached(self) -> list[Check]:
        return [c for c in self.checks if c.value is not None and c.threshold is not None and not c.passed]

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "requests": self.requests,
            "min_requests": self.min_requests,
            "checks": [c.as_dict() for c in self.checks],
            "breached": [c.expr for c in self.breached],
        }


def judge(guards: list[Gate], challenger: dict | None, champion: dict | None, min_requests: int) -> Verdict:
    """The challenger's verdict from its and the champion's window statistics (`live.stats` rows)."""
    # In shadow mode the server logs the challenger's copies as its requests too.
    seen = int((challenger or {}).get("requests") or 0)
    if seen < min_requests:
        return Verdict("wait", seen, min_requests)
    cand = {"live": challenger or {}}
    champ = {"live": champion} if champion else None
    checks = [evaluate(g, cand, base=champ, champion=champ) for g in guards]
    verdict = Verdict("pass", seen, min_requests, checks)
    if verdict.breached:
        verdict.state = "breach"
    return verdict
