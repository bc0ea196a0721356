"""Adaptation methods. Each module offers the same five functions:

- `apply(model, spec) -> model`: make the intended parameters (and only those) trainable;
- `save(model, directory)`: write the artifact (safetensors + a small config);
- `load(base_model, directory) -> model`: put a saved artifact on a freshly loaded base;
- `merge(model) -> model`: a plain transformers model with the update folded in, or a
  LaminaError saying the method cannot be merged;
- `ARTIFACT`: the name of the artifact directory inside a run (`adapter` or `model`);
- `MERGEABLE`: whether `merge` can fold the update into a plain model;
- `overhead(spec) -> str`: what the method adds at inference (for `lamina methods`).

Two optional hooks a method may set on the model it returns, consulted by the training code:
`lamina_hidden_states(batch)` (the SFT objective's forward, for methods whose virtual tokens
each packed example must see) and `lamina_optimizer(params, train_spec, device)`.
"""

from __future__ import annotations

from types import ModuleType

from lamina.errors import LaminaError

NAMES = ("full", "lora", "qlora", "bottleneck", "ia3", "prompt", "prefix", "bitfit")

# How `lamina serve` serves each method. shared: LoRA adapters stacked on one loaded base and
# mixed per row in a batch (lamina/serve/lora_stack.py). own: a model of its own (weights changed or extra
# modules), batched among its own requests. uncached: virtual tokens before the prompt, decoded
# without a KV cache one row at a time (see lamina.models.generate).
SERVING = {"lora": "shared", "qlora": "shared", "ia3": "own", "full": "own", "bitfit": "own",
           "bottleneck": "own", "prompt": "uncached", "prefix": "uncached"}


def get(name: str) -> ModuleType:
    from lamina.methods import bitfit, bottleneck, full, ia3, lora, prefix, prompt, qlora

    table = {
        "full": full,
        "lora": lora,
        "qlora": qlora,
        "bottleneck": bottleneck,
        "ia3": ia3,
        "prompt": prompt,
        "prefix": prefix,
        "bitfit": bitfit,
    }
    if name not in table:
        raise LaminaError(
            f"unknown method {name!r}; expected one of {', '.join(sorted(table))}", "method.name"
        )
    return table[name]
