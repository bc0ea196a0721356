"""Registry watch and hot swap. Every `poll_s` seconds each served alias is read (one indexed
query); when it has moved, the new version's signature and base are verified, the version is
loaded beside the old one (an alias moved outside Lamina, e.g. by MLflow's
own API, is refused as `lamina` itself refuses to follow it), the route switches, and the old version is retired: requests that
started on it finish there, then it is freed. A version that fails its checks or its load is
not served: the old one keeps answering, and the failure shows in /readyz and /metrics until
the alias moves again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from lamina.serve.pool import Pool
from lamina.serve.router import Router
from lamina.serve.servable import open_version

log = logging.getLogger("lamina.serve")


@dataclass
class RefState:
    ref: str
    name: str
    alias: str | None
    serving: int | None = None
    refused: int | None = None  # the version the alias points at that failed to load
    error: str | None = None
    swaps: int = 0


class Watcher:
    def __init__(self, pool: Pool, router: Router, poll_s: float, on_swap=None, metrics=None):
        self.pool, self.router, self.poll_s = pool, router, poll_s
        self.metrics = metrics  # lamina.serve.metrics.Metrics, for the rollout series
        self.on_swap = on_swap  # (ref, old key | None, new key | None, outcome, seconds, switched at)
        self.states: dict[str, RefState] = {}
        self.guardian = None  # lamina.rollout.serving.Guardian: judges active rollouts on each poll
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, ref: str) -> RefState:
        """Serve `ref` now (its current version loaded; errors raised to the caller)."""
        from lamina.registry import aliases, versions

        name, alias, number = versions.parse_ref(ref)
        if alias is not None:
            aliases.check_alias(alias)
            number = int(versions.version_for(ref).version)  # refused if moved outside Lamina
        state = RefState(ref, name, alias)
        self._switch(state, int(number))
        self.states[ref] = state
        return state

    def _switch(self, state: RefState, number: int) -> None:
        started = time.perf_counter()
        version = open_version(state.name, number)
        self.pool.add(version)
        before = self.router.set(state.ref, (version.key, 1.0))
        switched = time.time()  # from here new requests get the new version
        in_use = self.router.in_use()
        for key, _ in before.targets if before else ():
            if key not in in_use:
                self.pool.retire(key)
        old = f"{state.name}/{state.serving}" if state.serving is not None else None
        state.serving, state.refused, state.error = number, None, None
        state.swaps += 1 if old else 0
        if old and self.on_swap:
            self.on_swap(state.ref, old, version.key, "ok", time.perf_counter() - started, switched)
        if old:
            log.info("swap %s: %s -> %s in %.2f s", state.ref, old, version.key, time.perf_counter() - started)

    def poll_once(self) -> None:
        from lamina.registry import aliases, versions

        for state in list(self.states.values()):
            if state.alias is None:
                continue
            target = aliases.current(state.name, state.alias)
            if target == state.serving and state.refused is not None:  # moved back: nothing refused now
                state.refused, state.error = None, None
                if self.on_swap:
                    self.on_swap(state.ref, None, f"{state.name}/{target}", "restored", 0.0, time.time())
            if target is not None and target == state.serving:
                self._follow_rollout(state)
            if target is None or target == state.serving or target == state.refused:
                continue
            try:
                if int(versions.version_for(state.ref).version) == target:  # a move Lamina recorded
                    self._switch(state, target)
            except Exception as e:  # whatever failed, the old version keeps serving
                state.refused, state.error = target, f"{type(e).__name__}: {e}"
                log.warning("refused %s/%s for %s, still serving %s: %s", state.name, target, state.ref,
                            state.serving, state.error)
                if self.on_swap:
                    self.on_swap(state.ref, f"{state.name}/{state.serving}", f"{state.name}/{target}", "refused", 0.0,
                                 time.time())

    def _follow_rollout(self, state: RefState) -> None:
        """Route `state`'s alias by its rollout record: champion and a canary challenger side by
        side (split by caller), or the champion alone once the rollout ends; then judge its guards."""
        from lamina.rollout.serving import RoutePlan

        plan = RoutePlan.read(state.name, state.alias)
        champion = f"{state.name}/{state.serving}"
        route = self.router.get(state.ref)
        if plan.rollout:  # canary: split by caller; shadow: the champion answers, the challenger a copy
            challenger = f"{state.name}/{plan.rollout['challenger']}"
            if route is None or route.plan != plan:
                if challenger not in self.pool.served or self.pool.served[challenger].retired:
                    self.pool.add(open_version(state.name, int(plan.rollout["challenger"])))
                self.router.set(state.ref, (champion, 1.0), (challenger, 1.0), plan=plan)
                r = plan.rollout
                log.info("%s: rollout %s, %s %s beside %s", state.ref, r["id"], challenger,
                         "shadow" if r.get("mode") == "shadow" else f"{r.get('share', 0):g}% canary", champion)
        elif route is not None and route.plan is not None:
            log.info("%s: rollout ended, %s answers everyone", state.ref, champion)
            before = self.router.set(state.ref, (champion, 1.0))
            in_use = self.router.in_use()
            for key, _ in before.targets if before else ():
                if key not in in_use:
                    self.pool.retire(key)
        self._rollout_metrics(state.ref, plan)
        if self.guardian is not None:
            result = self.guardian.poll(state.name, state.alias)
            if result and result.get("action") and self.metrics is not None:
                kind = "rolled_back" if result["action"].get("rolled_back") else "acted"
                self.metrics.rollout_actions.labels(state.ref, kind).inc()

    def _rollout_metrics(self, ref: str, plan) -> None:
        if self.metrics is None:
            return
        gauge = self.metrics.rollout_share
        for labels in list(gauge._metrics):  # a series of an ended rollout drops to 0
            if labels[0] == ref:
                gauge.labels(*labels).set(0)
        if plan.rollout:
            mode = str(plan.rollout.get("mode", "canary"))
            share = 100.0 if mode == "shadow" else float(plan.rollout.get("share", 0.0))
            gauge.labels(ref, f"{plan.name}/{plan.rollout['challenger']}", mode).set(share)

    def run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception as e:  # a registry hiccup must not end the watch
                log.warning("registry poll failed: %s: %s", type(e).__name__, e)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="lamina-watch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
