"""What a server calls to take part in rollouts — the whole interface, kept narrow.

plan = RoutePlan.read(name, alias)          # on every registry poll: versions to hold loaded
number = plan.pick(caller)                  # per request: sticky split (key identity or `user`)
plan.shadow                                 # a version to answer a copy of each request, or None
observer.finished(key, status=..., ...)     # per answer: live events the guards judge
observer.shadowed(champion_key, challenger_key, champion_text, challenger_text, ...)
observer.feedback(response_id, rating)      # POST /v1/feedback
observer.prompt_drift(window_s)             # GET /metrics: this replica's input drift per version
guardian.poll(name, alias)                  # on the poll loop: judge guards, roll back on breach
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from lamina.errors import LaminaError
from lamina.eval.refusal import is_refusal
from lamina.registry import aliases
from lamina.rollout import control, drift, live, record, split

log = logging.getLogger("lamina.rollout")


@dataclass(frozen=True)
class RoutePlan:
    name: str
    alias: str
    champion: int | None
    rollout: dict | None  # the active rollout record, if any

    @classmethod
    def read(cls, name: str, alias: str) -> RoutePlan:
        return cls(name, alias, aliases.current(name, alias), record.active(name, alias))

    @property
    def versions(self) -> set[int]:
        """Every version this alias needs loaded now."""
        held = {self.champion} if self.champion is not None else set()
        if self.rollout:
            held.add(int(self.rollout["challenger"]))
        return held

    @property
    def shadow(self) -> int | None:
        return split.shadow_of(self.rollout)

    def pick(self, caller: str) -> int | None:
        if self.champion is None:
            return None
        return split.version_for(self.rollout, self.champion, caller)

    def arm(self, number: int) -> str:
        return "challenger" if self.rollout and number == int(self.rollout["challenger"]) else "champion"


class Observer:
    """Turns what the server saw into live events; remembers recent response ids for feedback."""

    def __init__(self, log_: live.LiveLog | None = None, remember: int = 100_000):
        self.log = log_ or live.LiveLog()
        self._ids: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._prompts: dict[str, collections.deque] = {}  # version -> (time, prompt tokens), recent

    def finished(
        self,
        key: str,
        *,
        status: int,
        latency_s: float,
        trips: list[tuple[str, str]],
        outputs: list[str],
        prompt_tokens: int,
        response_id: str | None,
        arm: str = "champion",
    ) -> None:
        if prompt_tokens and arm != "shadow":  # a shadow copy repeats a prompt already counted
            with self._lock:
                self._prompts.setdefault(key, collections.deque(maxlen=10_000)).append(
                    (time.time(), prompt_tokens)
                )
        counts = collections.Counter(kind for kind, _ in trips)
        refused = bool(outputs) and all(is_refusal(o) for o in outputs)
        self.log.request(
            key,
            ok=status == 200,
            latency_s=latency_s,
            guard_trips=dict(counts),
            refused=refused,
            prompt_tokens=prompt_tokens,
            response_id=response_id,
            arm=arm,
        )
        if response_id and status == 200:
            with self._lock:
                self._ids[response_id] = key
                while len(self._ids) > self._remember:
                    self._ids.popitem(last=False)

    def shadowed(
        self,
        champion_key: str,
        challenger_key: str,
        champion_text: str,
        challenger_text: str | None,
        *,
        status: int,
        latency_s: float,
        trips: list[tuple[str, str]],
        prompt_tokens: int = 0,
    ) -> None:
        """The challenger's answer to a copy: logged as its request, and compared."""
        self.finished(
            challenger_key,
            status=status,
            latency_s=latency_s,
            trips=trips,
            outputs=[challenger_text] if challenger_text is not None else [],
            prompt_tokens=prompt_tokens,
            response_id=None,
            arm="shadow",
        )
        self.log.shadow(
            champion_key,
            challenger_key,
            ok=status == 200,
            latency_s=latency_s,
            agree=status == 200 and split.agree(champion_text, challenger_text or ""),
        )

    def prompt_drift(self, window_s: float) -> dict[str, float]:
        """Per version with a reference: the KS distance of this replica's prompt lengths over
        the last `window_s` from the version's eval set (what /metrics exports)."""
        since = time.time() - window_s
        with self._lock:
            recent = {k: [n for t, n in q if t > since] for k, q in self._prompts.items()}
        out = {}
        for key, lengths in recent.items():
            value, _ = drift.statistic(lengths, drift.reference(key))
            if value is not None:
                out[key] = value
        return out

    def feedback(self, response_id: str, rating: float) -> str:
        """Store a rating with the version that gave `response_id`; returns that version."""
        with self._lock:
            key = self._ids.get(response_id)
        if key is None:
            raise LaminaError("unknown or expired response id", "id")
        self.log.feedback(key, response_id, rating)
        return key


class Guardian:
    """Judges active rollouts on the server's poll loop, at most once per `every_s` per alias."""

    def __init__(self, every_s: float = 1.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self.actions: list[dict] = []

    def poll(self, name: str, alias: str) -> dict | None:
        ref = f"{name}@{alias}"
        now = time.monotonic()
        if now - self._last.get(ref, -1e9) < self.every_s:
            return None
        self._last[ref] = now
        result = control.check(name, alias)
        if result and result["action"]:
            self.actions.append(result["action"])
        return result
