"""Loaded models: one engine per base, every LoRA version of that base stacked on it by name
(lora_stack.py); methods that cannot share a base get an engine of their own. Requests hold a version while
they run (`acquire` / `release`); a retired version is freed when its last request is done.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.governance import at_rest
from lamina.serve import decode_attention
from lamina.serve.engine import Engine, eos_ids
from lamina.serve.servable import Version


@dataclass
class Served:
    version: Version
    engine: Engine
    adapter: str | None
    tokenizer: object
    context: int
    inflight: int = 0
    retired: bool = False
    base_key: tuple | None = field(default=None)


def _adapter_name(version: Version) -> str:
    return re.sub(r"\W", "_", f"{version.name}_v{version.number}")


def _load_base(version: Version, device: torch.device, dtype: torch.dtype):
    from lamina.models.loading import load_hf_model

    if version.method == "qlora":
        from lamina.methods import qlora

        settings = read_json(version.artifact_dir / qlora.SETTINGS)
        return qlora.load_quantized(str(version.base_path), device, settings, "sdpa")
    return load_hf_model(version.base_path, device, dtype)


def _load_own(version: Version, device: torch.device, dtype: torch.dtype):
    from lamina import methods
    from lamina.models.loading import load_hf_model

    if version.artifact == "model":
        return load_hf_model(version.artifact_dir, device, dtype)
    return methods.get(version.method).load(load_hf_model(version.base_path, device, dtype), version.artifact_dir)


def _shares_base(version: Version) -> bool:
    """LoRA versions the stacked path covers share their base; others get a model of their own."""
    from lamina.serve import lora_stack

    return version.mode == "shared" and lora_stack.supports(version.artifact_dir)


class Pool:
    def __init__(self, device: torch.device, dtype: torch.dtype, max_batch: int,
                 on_step: Callable[[dict], None] | None = None):
        self.device, self.dtype, self.max_batch, self.on_step = device, dtype, max_batch, on_step
        self.lock = threading.Lock()
        self.shared: dict[tuple, Engine] = {}
        self.served: dict[str, Served] = {}

    def add(self, version: Version) -> Served:
        """Load `version` (its base too, unless already loaded) and return it, ready for requests.
        Runs on the caller's thread; only the adapter attachment waits for the engine's step."""
        with self.lock:
            if version.key in self.served:  # still loaded (perhaps draining): serve it again
                self.served[version.key].retired = False
                return self.served[version.key]
        # Weights stored encrypted are read from a private decrypted view, gone once loaded.
        with at_rest.plain_view(version.path) as view:
            return self._load(version, dataclasses.replace(version, path=view))

    def _load(self, version: Version, files: Version) -> Served:
        """Load `version` from `files` (the same version, its directory readable as plaintext)."""
        from lamina.models.loading import load_tokenizer

        tokenizer = load_tokenizer(files.tokenizer_dir)
        if _shares_base(files):
            engine, adapter = self._shared_engine(version, tokenizer), _adapter_name(version)
            engine.call(lambda: engine.stack.add(adapter, files.artifact_dir)).result(timeout=600)
            key = version.base_key()
        else:
            model = _load_own(files, self.device, self.dtype).eval()
            if version.mode != "uncached":
                decode_attention.install(model.get_base_model() if hasattr(model, "get_base_model") else model)
            engine = Engine(model, eos_ids(model, tokenizer), self.max_batch, cached=version.mode != "uncached",
                            on_step=self.on_step)
            engine.start(f"lamina-engine-{version.key}")
            adapter, key = None, None
        base = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
        context = int(getattr(base.config, "max_position_embeddings", 0) or 1 << 30)
        served = Served(version, engine, adapter, tokenizer, context, base_key=key)
        with self.lock:
            self.served[version.key] = served
        return served

    def _shared_engine(self, version: Version, tokenizer) -> Engine:
        with self.lock:
            engine = self.shared.get(version.base_key())
        if engine is None:
            from lamina.serve.lora_stack import LoraStack

            model = _load_base(version, self.device, self.dtype).eval()
            decode_attention.install(model)
            engine = Engine(model, eos_ids(model, tokenizer), self.max_batch, on_step=self.on_step,
                            stack=LoraStack(model))
            engine.start(f"lamina-engine-{version.base_sha256[:12]}")
            with self.lock:
                self.shared[version.base_key()] = engine
        return engine

    def acquire(self, key: str) -> Served:
        with self.lock:
            served = self.served.get(key)
            if served is None or served.retired:
                raise LaminaError("version is not loaded", key)
            served.inflight += 1
            return served

    def release(self, served: Served) -> None:
        with self.lock:
            served.inflight -= 1
            free = served.retired and served.inflight == 0
        if free:
            self._free(served)

    def retire(self, key: str) -> None:
        """No new requests for `key`; freed now or when its last in-flight request ends."""
        with self.lock:
            served = self.served.get(key)
            if served is None or served.retired:
                return
            served.retired = True
            free = served.inflight == 0
        if free:
            self._free(served)

    def _free(self, served: Served) -> None:
        with self.lock:
            if not served.retired or served.inflight:  # brought back by `add` meanwhile
                return
            if self.served.get(served.version.key) is served:
                del self.served[served.version.key]
            others = [s for s in self.served.values() if s.engine is served.engine]
            if not others and served.base_key is not None:
                self.shared.pop(served.base_key, None)
        if others:
            served.engine.call(lambda: served.engine.stack.remove(served.adapter))
        else:
            threading.Thread(target=served.engine.stop, daemon=True).start()

    def engines(self) -> list[Engine]:
        with self.lock:
            return list({id(s.engine): s.engine for s in self.served.values()}.values())

    def close(self) -> None:
        for engine in self.engines():
            engine.stop()
