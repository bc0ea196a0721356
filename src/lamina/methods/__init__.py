"""Adaptation methods. Each module offers the same five functions:

- `apply(model, spec) -> model`: make the intended parameters (and only those) trainable;
- `save(model, directory)`: write the artifact (safetensors + a small config);
- `load(base_model, directory) -> model`: put a saved artifact on a freshly loaded base;
- `merge(model) -> model`: a plain transformers model with the update folded in, or a
  LaminaError saying the method cannot be merged;
- `ARTIFACT`: the name of the artifact directory inside a run (`adapter` or `model`).
"""

from __future__ import annotations

from types import ModuleType

from lamina.errors import LaminaError


def get(name: str) -> ModuleType:
    from lamina.methods import full, lora

    table = {"full": full, "lora": lora}
    if name not in table:
        raise LaminaError(f"unknown method {name!r}; expected one of {', '.join(sorted(table))}", "method.name")
    return table[name]
