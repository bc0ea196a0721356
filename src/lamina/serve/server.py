"""Assembling a server: the references to serve (default: every alias set in the registry),
the pool of loaded models, the router and the registry watch, keys, guard, metrics and request
log — and running it under uvicorn, in this thread (`lamina serve`) or a background one (tests,
benchmarks)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from lamina.errors import LaminaError
from lamina.recipe import RegistrySpec, RolloutSpec, ServeSpec
from lamina.serve.guard import Guard, read_canaries
from lamina.serve.keys import KeyStore
from lamina.serve.metrics import Metrics
from lamina.serve.pool import Pool
from lamina.serve.reqlog import RequestLog
from lamina.serve.router import Router
from lamina.serve.watch import Watcher

log = logging.getLogger("lamina.serve")


def default_refs() -> list[str]:
    """`name@alias` for every alias set on every registered model (what has been released)."""
    from lamina.registry import tracking

    refs = []
    with tracking.server_errors("listing registered models"):
        for model in tracking.client().search_registered_models():
            aliases = getattr(model, "aliases", None) or {}
            refs += [f"{model.name}@{a}" for a in RegistrySpec().aliases if a in aliases]
    return refs


def version_canaries(path: Path) -> list[Path]:
    """The canary file a version's recipe planted (`eval.canaries`), when it is on this machine."""
    import yaml

    from lamina.rundir import RECIPE

    recipe = path / RECIPE
    data = yaml.safe_load(recipe.read_text()) if recipe.is_file() else None
    file = (((data or {}).get("eval") or {}).get("canaries")) if isinstance(data, dict) else None
    return [Path(file)] if file and Path(file).is_file() else []


class Server:
    def __init__(self, refs: list[str], spec: ServeSpec | None = None, device: str | None = None,
                 canaries: list[Path] | None = None):
        from lamina.models.loading import pick_device

        self.spec = spec or ServeSpec()
        if not self.spec.auth and self.spec.host not in ("127.0.0.1", "localhost", "::1"):
            raise LaminaError("serving without API keys is allowed on loopback only", "--no-auth")
        self.metrics = Metrics()
        dev = pick_device(device)
        self.pool = Pool(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32, self.spec.max_batch,
                         on_step=self.metrics.on_step)
        self.router = Router()
        self.watcher = Watcher(self.pool, self.router, self.spec.poll_s, on_swap=self._on_swap,
                               metrics=self.metrics)
        self.keys = KeyStore()
        from lamina.rollout.serving import Guardian, Observer

        self.observer = Observer()  # live events the rollout guards and `lamina monitor` read
        self.drift_window_s = RolloutSpec().window_s  # /metrics' input drift: this replica's last window
        self.watcher.guardian = Guardian(every_s=self.spec.poll_s)
        self.refs = list(refs) or default_refs()
        if not self.refs:
            raise LaminaError("nothing to serve: no reference given and no alias set in the registry "
                              "(run `lamina demo`, or `lamina promote NAME VERSION --to staging`)")
        self.canary_files = list(canaries or [])
        self.swap_events: list[dict] = []  # what /readyz and the tests read back
        self.guard: Guard | None = None
        self.reqlog: RequestLog | None = None
        self.uvicorn = None
        self.socket = None  # the listening socket `bind` took
        self.thread: threading.Thread | None = None

    def load(self) -> None:
        """Load every reference's current version (verified) and start watching the aliases."""
        files = list(self.canary_files)
        for ref in self.refs:
            state = self.watcher.add(ref)
            files += version_canaries(self.pool.served[f"{state.name}/{state.serving}"].version.path)
            self.metrics.serving.labels(ref, f"{state.name}/{state.serving}").set(1)
        self.guard = Guard(self.spec.guard, read_canaries(files), self.spec.holdback_chars)
        self.reqlog = RequestLog(content=self.spec.log_content, masker=self.guard.masker)
        self.watcher.start()

    def _on_swap(self, ref: str, old: str | None, new: str | None, outcome: str, seconds: float,
                 at: float) -> None:
        self.swap_events.append({"time": at, "ref": ref, "from": old, "to": new, "outcome": outcome,
                                 "seconds": round(seconds, 3)})
        if outcome != "restored":
            self.metrics.swaps.labels(ref, outcome).inc()
        if outcome in ("ok", "restored"):
            if outcome == "ok":
                self.metrics.swap_seconds.labels(ref).observe(seconds)
            if old:
                self.metrics.serving.labels(ref, old).set(0)
            self.metrics.serving.labels(ref, new).set(1)
            for series in list(self.metrics.refused._metrics):
                if series[0] == ref:
                    self.metrics.refused.labels(*series).set(0)
        else:
            self.metrics.refused.labels(ref, new).set(1)

    def readiness(self) -> tuple[bool, dict]:
        refs, ready = {}, True
        for ref in self.refs:
            state = self.watcher.states.get(ref)
            key = self.router.pick(ref)
            served = self.pool.served.get(key) if key else None
            alive = served is not None and served.engine.thread is not None and served.engine.thread.is_alive()
            ready = ready and alive
            refs[ref] = {"serving": key, "alive": alive,
                         "refused": f"{state.name}/{state.refused}" if state and state.refused else None,
                         "error": state.error if state else None}
        return ready, {"refs": refs}

    def app(self):
        from lamina.serve.app import create_app

        return create_app(self)

    def bind(self) -> None:
        """Take the port before anything is loaded: a port in use is a one-line error up front,
        not a "listening on" line followed by the web server's own failure."""
        import socket

        sock = socket.socket(socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.spec.host, self.spec.port))
        except OSError as e:
            sock.close()
            raise LaminaError(f"cannot listen on {self.spec.host}:{self.spec.port}: {e.strerror} (another server "
                              "there? choose a port with --port)", "--port") from None
        self.socket = sock

    def run(self) -> None:
        """Serve in this thread until interrupted (on the socket `bind` took, if it was called)."""
        import uvicorn

        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app(), host=self.spec.host, port=self.spec.port,
                                                     log_level="warning", timeout_graceful_shutdown=5))
        try:
            self.uvicorn.run(sockets=[self.socket] if self.socket is not None else None)
        finally:
            self.close()

    def start_background(self, timeout: float = 30.0) -> None:
        """Serve from a daemon thread; returns once the socket is listening."""
        import time

        import uvicorn

        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app(), host=self.spec.host, port=self.spec.port,
                                                     log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.uvicorn.run, name="lamina-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise LaminaError(f"the server did not start on {self.spec.host}:{self.spec.port}")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        servers = getattr(self.uvicorn, "servers", None) or []
        for s in servers:
            for sock in s.sockets:
                return sock.getsockname()[1]
        return self.spec.port

    def close(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.watcher.stop()
        self.pool.close()
