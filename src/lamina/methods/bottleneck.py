"""Bottleneck adapters (Houlsby / Pfeiffer), written in Lamina.

Each adapter is down-projection -> non-linearity -> up-projection with a residual around it,
applied to a sublayer's output before the decoder layer adds it to the stream. The
up-projection starts at zero, so the adapted model starts as exactly the base. Pfeiffer puts
one adapter after each MLP; Houlsby one after attention and one after the MLP.

Adapters are child modules of the sublayer they follow (`...mlp.bottleneck.down.weight`) and
run through a forward hook, so the base's modules and weights stay untouched. The artifact is
`bottleneck.safetensors` plus `bottleneck.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.fsio import read_json, write_json

ARTIFACT = "adapter"
MERGEABLE = False
WEIGHTS, CONFIG = "bottleneck.safetensors", "bottleneck.json"
POSITIONS = {"pfeiffer": ("mlp",), "houlsby": ("self_attn", "mlp")}
ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}


def overhead(spec) -> str:
    per_layer = len(POSITIONS[spec.style])
    return f"+{per_layer} adapter block(s) per decoder layer (2 linears of width {spec.size} each)"


class Adapter(torch.nn.Module):
    def __init__(self, hidden: int, size: int, activation: str, init_std: float):
        super().__init__()
        self.down = torch.nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.normal_(self.down.weight, std=init_std)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # The adapter keeps fp32 weights; a bf16 base stream goes through it and comes back bf16.
        delta = self.up(self.act(self.down(y.to(self.down.weight.dtype))))
        return y + delta.to(y.dtype)


def _after(module, args, output):
    if isinstance(output, tuple):  # attention returns (output, weights)
        return (module.bottleneck(output[0]), *output[1:])
    return module.bottleneck(output)


def _sublayers(model, style: str) -> list[tuple[str, torch.nn.Module]]:
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise LaminaError(f"{type(model).__name__}: no decoder `layers` to put adapters in", "method.name")
    found = []
    for i, layer in enumerate(layers):
        for attr in POSITIONS[style]:
            sub = getattr(layer, attr, None)
            if sub is None:
                raise LaminaError(
                    f"{type(model).__name__} layer {i} has no `{attr}` for a {style} adapter", "method.style"
                )
            found.append((f"layers.{i}.{attr}", sub))
    return found


def _settings(spec) -> dict:
    return {"style": spec.style, "size": spec.size, "activation": spec.activation, "init_std": spec.init_std}


def _insert(model, settings: dict):
    for p in model.parameters():
        p.requires_grad_(False)
    ref = next(model.parameters())
    for _, sub in _sublayers(model, settings["style"]):
        adapter = Adapter(
            model.config.hidden_size, settings["size"], settings["activation"], settings["init_std"]
        )
        sub.add_module("bottleneck", adapter.to(ref.device))
        sub.register_forward_hook(_after)
    model.lamina_bottleneck = settings
    return model


def apply(model, spec):
    return _insert(model, _settings(spec))


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if ".bottleneck." in n}


def save(model, directory: Path) -> None:
    directory = Path(directory)
    save_file(adapter_state(model), str(directory / WEIGHTS))
    write_json(directory / CONFIG, {**model.lamina_bottleneck, "hidden_size": model.config.hidden_size})


def load(base_model, directory: Path):
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise LaminaError(f"needs {CONFIG} and {WEIGHTS}", str(directory))
    settings = read_json(directory / CONFIG)
    if settings.get("hidden_size") != base_model.config.hidden_size:
        raise LaminaError(
            f"adapters for hidden size {settings.get('hidden_size')}, base has "
            f"{base_model.config.hidden_size}",
            str(directory / CONFIG),
        )
    model = _insert(base_model, {k: settings[k] for k in ("style", "size", "activation", "init_std")})
    saved = load_file(str(directory / WEIGHTS))
    expected = set(adapter_state(model))
    if set(saved) != expected:
        raise LaminaError(
            f"tensors do not match the adapter layout ({len(saved)} saved, {len(expected)} expected)",
            str(directory / WEIGHTS),
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    return model


def merge(model):
    raise LaminaError(
        "bottleneck adapters cannot be merged: they add non-linear layers the base has no place for", "method"
    )
