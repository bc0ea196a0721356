"""Which loaded version answers a model name: each served reference (`name@alias` or
`name/version`) routes to one version today, or to several with weights (the rollout's
canary split sets those). Switching a route is one assignment under a lock: requests that
already picked a version keep it; the next request sees the new one.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    ref: str
    targets: tuple[tuple[str, float], ...]  # (version key "name/N", weight)
    plan: object | None = None  # lamina.rollout.serving.RoutePlan while a canary is active

    def pick(self, rng: random.Random, caller: str = "") -> str:
        if self.plan is not None:  # a rollout's sticky split by caller
            key = f"{self.plan.name}/{self.plan.pick(caller)}"
            if any(k == key for k, _ in self.targets):
                return key
        if len(self.targets) == 1:
            return self.targets[0][0]
        keys, weights = zip(*self.targets, strict=True)
        return rng.choices(keys, weights)[0]


class Router:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    def set(self, ref: str, *targets: tuple[str, float], plan: object | None = None) -> Route | None:
        """Point `ref` at the given versions; returns the route it replaced."""
        with self._lock:
            before = self._routes.get(ref)
            self._routes[ref] = Route(ref, tuple(targets), plan)
            return before

    def get(self, ref: str) -> Route | None:
        with self._lock:
            return self._routes.get(ref)

    def pick(self, ref: str, caller: str = "") -> str | None:
        with self._lock:
            route = self._routes.get(ref)
            return route.pick(self._rng, caller) if route else None

    def refs(self) -> list[str]:
        with self._lock:
            return list(self._routes)

    def in_use(self) -> set[str]:
        with self._lock:
            return {key for route in self._routes.values() for key, _ in route.targets}
