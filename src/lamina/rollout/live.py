"""Live per-version observations: what each server replica saw, and the window statistics
the guards and `lamina monitor` read.

A server writes one JSON line per event (request answered, feedback, shadow comparison) to
`<workspace>/live/<model>/<hour>-<replica>.jsonl` — a file per replica and hour, opened for
append, so replicas never share a file and readers only open the hours a window touches.
Lines carry no prompt or output text: only version, outcome, timings and counts.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.registry.versions import check_name
from lamina.rollout.drift import reference
from lamina.rollout.drift import statistic as drift_stat


def root(model: str) -> Path:
    path = workspace.subdir("live") / check_name(model)
    path.mkdir(exist_ok=True)
    return path


def _hour(ts: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(ts))


class LiveLog:
    """The writer a server replica holds; thread-safe, one line per call."""

    def __init__(self, replica: str | None = None):
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.Lock()

    def _write(self, model: str, event: dict) -> None:
        event = {"t": math.floor(time.time() * 1000) / 1000, **event}  # never later than a reader's "now"
        path = root(model) / f"{_hour(event['t'])}-{self.replica}.jsonl"
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write(line)

    def request(
        self,
        version: str,
        *,
        ok: bool,
        latency_s: float,
        guard_trips: dict[str, int] | None = None,
        refused: bool = False,
        prompt_tokens: int = 0,
        response_id: str | None = None,
        arm: str = "champion",
    ) -> None:
        """One answered (or failed) request of `version` ("name/N")."""
        model = version.rpartition("/")[0]
        self._write(
            model,
            {
                "kind": "request",
                "version": version,
                "ok": bool(ok),
                "latency_s": round(float(latency_s), 6),
                "trips": {k: int(v) for k, v in (guard_trips or {}).items() if v},
                "refused": bool(refused),
                "prompt_tokens": int(prompt_tokens),
                "id": response_id,
                "arm": arm,
            },
        )

    def feedback(self, version: str, response_id: str, rating: float) -> None:
        if not isinstance(rating, int | float) or isinstance(rating, bool) or not math.isfinite(rating):
            raise LaminaError("a rating must be a finite number", "rating")
        self._write(
            version.rpartition("/")[0],
            {"kind": "feedback", "version": version, "id": response_id, "rating": float(rating)},
        )

    def shadow(self, champion: str, challenger: str, *, agree: bool, ok: bool, latency_s: float) -> None:
        """A shadow copy answered by `challenger`: did it agree with what the user received?"""
        self._write(
            champion.rpartition("/")[0],
            {
                "kind": "shadow",
                "version": challenger,
                "champion": champion,
                "agree": bool(agree),
                "ok": bool(ok),
                "latency_s": round(float(latency_s), 6),
            },
        )


def read(model: str, since: float, until: float | None = None) -> list[dict]:
    """Events of `model` with since < t <= until, from every replica."""
    until = until if until is not None else time.time() + 1
    directory = workspace.home() / "live" / model
    if not directory.is_dir():
        return []
    hours = {_hour(h) for h in range(int(since) - int(since) % 3600, int(until) + 3600, 3600)}
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        if path.name.split("-", 1)[0] not in hours:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a replica killed mid-line leaves a partial last line
            if since < event.get("t", 0) <= until:
                out.append(event)
    return out


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def stats(events: list[dict], references: dict[str, dict | None] | None = None) -> dict[str, dict]:
    """Per version: the `live.*` metrics of these events (None where nothing was seen);
    `references` holds each version's eval-set prompt lengths, for `prompt_drift`."""
    by: dict[str, dict] = {}
    for e in events:
        s = by.setdefault(e["version"], {"req": [], "fb": [], "sh": []})
        {"request": s["req"], "feedback": s["fb"], "shadow": s["sh"]}[e["kind"]].append(e)
    refs = references or {}
    return {version: _version_stats(s, refs.get(version)) for version, s in sorted(by.items())}


def _rate(count: int, n: int) -> float | None:
    return count / n if n else None


def prompt_lengths(requests: list[dict]) -> list[int]:
    return [int(e["prompt_tokens"]) for e in requests if e.get("prompt_tokens")]


def _version_stats(s: dict, reference: dict | None = None) -> dict:
    req = s["req"]
    lengths = prompt_lengths(req)
    drift, drift_p = drift_stat(lengths, reference)
    n = len(req)
    answered = [e for e in req if e["ok"]]
    tripped = [e for e in answered if e["trips"]]
    pii = [e for e in answered if e["trips"].get("pii")]
    ratings = [e["rating"] for e in s["fb"]]
    shadow = s["sh"]
    return {
        "requests": n,
        "errors": n - len(answered),
        "error_rate": _rate(n - len(answered), n),
        "latency_p50_s": _quantile([e["latency_s"] for e in answered], 0.5),
        "latency_p95_s": _quantile([e["latency_s"] for e in answered], 0.95),
        "guard_trips": sum(sum(e["trips"].values()) for e in answered) if n else None,
        "guard_trip_rate": _rate(len(tripped), len(answered)),
        "pii_trips": sum(e["trips"].get("pii", 0) for e in answered) if n else None,
        "pii_rate": _rate(len(pii), len(answered)),
        "refusal_rate": _rate(sum(e["refused"] for e in answered), len(answered)),
        "prompt_tokens_p50": _quantile(lengths, 0.5),
        "prompt_tokens_p95": _quantile(lengths, 0.95),
        "prompt_drift": drift,
        "prompt_drift_p": drift_p,
        "feedback_n": len(ratings),
        "feedback_score": sum(ratings) / len(ratings) if ratings else None,
        "shadow_n": len(shadow),
        "agreement_rate": _rate(sum(e["agree"] for e in shadow if e["ok"]), sum(e["ok"] for e in shadow)),
        "shadow_error_rate": _rate(sum(not e["ok"] for e in shadow), len(shadow)),
    }


def window(
    model: str, seconds: float, at: float | None = None, not_before: float | None = None
) -> dict[str, dict]:
    """Per-version statistics of the last `seconds` (and not before `not_before`)."""
    at = at if at is not None else time.time()
    events = read(model, max(at - seconds, not_before or 0.0), at)
    versions = {e["version"] for e in events if e["kind"] == "request"}
    return stats(events, {v: reference(v) for v in versions})
