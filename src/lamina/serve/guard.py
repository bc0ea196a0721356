"""Output guard: every response passes the intake's PII analyzer (masked, or the response
ended, per setting) and a check for training canaries (always ended). Streaming holds back
only the last `holdback` characters (and never cuts a PII span in two): what is sent is final.

A trip is reported as (kind, action) — kind an entity type or `CANARY` — never with the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import LaminaError


def read_canaries(paths: list[Path]) -> list[str]:
    """Secrets from canary spec files (JSONL of {prefix, secret[, prompt]}, as `eval.canaries`)."""
    secrets = []
    for path in paths:
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                secret = json.loads(line)["secret"]
            except (ValueError, KeyError, TypeError):
                raise LaminaError("expected a JSON object with a `secret`", f"{path}:{lineno}") from None
            secrets.append(str(secret))
    return secrets


class Guard:
    def __init__(self, mode: str, canaries: list[str], holdback: int):
        self.mode = mode
        self.canaries = [c for c in canaries if c]
        # Without the PII check only canaries (and stop strings) need text held back.
        self.holdback = max([holdback if mode != "off" else 0, *(len(c) for c in self.canaries)])
        self.masker = None
        if mode != "off":  # Presidio is imported only when the PII check is on
            from lamina.data.intake.pii import Masker
            from lamina.recipe import PiiSpec

            self.masker = Masker(PiiSpec())

    def stream(self, stop: list[str] | None = None) -> GuardedText:
        hold = max([self.holdback, *(len(s) - 1 for s in stop or [])])
        return GuardedText(self, hold, list(stop or []))


@dataclass
class GuardedText:
    """One choice's text: fed raw text as it is decoded, it returns what may be sent now."""

    guard: Guard
    hold: int
    stop: list[str]
    raw: str = ""
    sent: int = 0  # characters of `raw` already released (masked) to the client
    trips: list[tuple[str, str]] = field(default_factory=list)
    finish: str | None = None  # "stop" (a stop string) or "content_filter" once ended

    def feed(self, piece: str, final: bool = False) -> str:
        if self.finish:
            return ""
        self.raw += piece
        for s in self.stop:
            at = self.raw.find(s, max(0, self.sent - len(s)))
            if at >= 0:
                self.raw, self.finish, final = self.raw[:at], "stop", True
        end = len(self.raw)
        if not final and self.hold:
            # Hold back the last `hold` characters, and the word they cut: a span shorter than
            # the hold is whole (and found) before any of it is released.
            end = max(self.sent, self.raw.rfind(" ", 0, max(0, len(self.raw) - self.hold)) + 1)
        return self._release(end)

    def _release(self, end: int) -> str:
        g = self.guard
        if any(c in self.raw for c in g.canaries):
            self.trips.append(("CANARY", "blocked"))
            self.finish = "content_filter"
            return ""
        findings = g.masker.find(self.raw) if g.masker else []
        out, cursor = [], self.sent
        for f in sorted(findings, key=lambda f: f.start):
            if f.end <= self.sent or f.start >= end:
                continue
            if f.end > end and not self.finish and end < len(self.raw):
                end = max(self.sent, f.start)  # never release half a span: hold it back whole
                break
            if g.mode == "block":
                self.trips.append((f.entity, "blocked"))
                self.finish = "content_filter"
                return "".join(out)
            self.trips.append((f.entity, "masked"))
            out += [self.raw[cursor : max(cursor, f.start)], f"<{f.entity}>"]
            cursor = max(cursor, f.end)
        if cursor < end:
            out.append(self.raw[cursor:end])
        self.sent = max(self.sent, end, cursor)
        return "".join(out)
