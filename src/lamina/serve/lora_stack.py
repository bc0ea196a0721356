"""Many LoRA adapters on one base, mixed per row of a batch, at the cost of one adapter.

Each targeted linear layer keeps every loaded adapter's A matrices stacked into one [R, in]
matrix and its B matrices into one [out, R] (R = the sum of the adapters' ranks; zeros where an
adapter does not target that layer). A forward computes `x @ A.T`, multiplies it by a per-row
mask that holds each row's adapter scale on its own adapter's columns and zero elsewhere, and
adds `@ B.T`: two small matmuls per layer whatever the number of adapters. PEFT's mixed batch
(`adapter_names`) runs a separate sub-batch per adapter per layer instead, which costs kernel
launches in proportion to the adapters in the batch.

Adapters are read from PEFT's own format (adapter_config.json + adapter_model.safetensors);
configurations this path does not cover (DoRA, per-module rank or alpha patterns, fan-in-fan-
out weights, extra trained modules) are left to PEFT (`supports`). As in PEFT, the adapter
weights stay in fp32 and the input is cast to them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lamina.errors import LaminaError
from lamina.fsio import read_json

PREFIX, A_KEY, B_KEY = "base_model.model.", ".lora_A.weight", ".lora_B.weight"


def supports(adapter_dir: Path) -> bool:
    config = read_json(Path(adapter_dir) / "adapter_config.json")
    return (config.get("peft_type") == "LORA" and not config.get("use_dora") and not config.get("rank_pattern")
            and not config.get("alpha_pattern") and not config.get("fan_in_fan_out")
            and not config.get("modules_to_save") and config.get("bias", "none") == "none"
            and (Path(adapter_dir) / "adapter_model.safetensors").is_file())


class _Rows:
    """The per-row scale mask of the forward being run (set by the engine before each one)."""

    mask: torch.Tensor | None = None


class StackedLoRA(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, rows: _Rows):
        super().__init__()
        self.base, self.rows = base, rows
        dev = base.weight.device
        self.A = torch.zeros(0, base.in_features, device=dev)
        self.B = torch.zeros(base.out_features, 0, device=dev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        mask = self.rows.mask
        if mask is None or self.A.shape[0] == 0:
            return y
        h = (x.to(self.A.dtype) @ self.A.T) * mask[:, None, :]
        return y + (h @ self.B.T).to(y.dtype)


class LoraStack:
    def __init__(self, model):
        self.model = model
        self.rows = _Rows()
        self.layers: dict[str, StackedLoRA] = {}
        self.adapters: dict[str, dict] = {}  # name -> {offset, r, scale}
        self._key: tuple | None = None

    @property
    def width(self) -> int:
        return sum(a["r"] for a in self.adapters.values())

    def _layer(self, path: str) -> StackedLoRA:
        if path not in self.layers:
            parent_path, _, child = path.rpartition(".")
            parent = self.model.get_submodule(parent_path)
            base = getattr(parent, child)
            if not isinstance(base, torch.nn.Linear):
                raise LaminaError(f"LoRA on {type(base).__name__} is not served by the stacked path", path)
            layer = StackedLoRA(base, self.rows)
            layer.A = torch.zeros(self.width, base.in_features, device=base.weight.device)
            layer.B = torch.zeros(base.out_features, self.width, device=base.weight.device)
            setattr(parent, child, layer)
            self.layers[path] = layer
        return self.layers[path]

    def add(self, name: str, adapter_dir: Path) -> None:
        """Stack the adapter at `adapter_dir` under `name` (between forwards)."""
        from safetensors.torch import load_file

        config = read_json(Path(adapter_dir) / "adapter_config.json")
        r, alpha = int(config["r"]), float(config["lora_alpha"])
        weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
        paths = {k[len(PREFIX) : -len(A_KEY)] for k in weights if k.endswith(A_KEY)}
        if not paths:
            raise LaminaError("no LoRA weights found", str(adapter_dir))
        for path in sorted(paths):
            self._layer(path)
        for path, layer in self.layers.items():
            dev = layer.base.weight.device
            a = weights.get(f"{PREFIX}{path}{A_KEY}")
            b = weights.get(f"{PREFIX}{path}{B_KEY}")
            a = a.float().to(dev) if a is not None else torch.zeros(r, layer.base.in_features, device=dev)
            b = b.float().to(dev) if b is not None else torch.zeros(layer.base.out_features, r, device=dev)
            layer.A, layer.B = torch.cat([layer.A, a]), torch.cat([layer.B, b], 1)
        scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
        self.adapters[name] = {"offset": self.width, "r": r, "scale": scale}

    def remove(self, name: str) -> None:
        gone = self.adapters.pop(name)
        keep = torch.ones(self.width + gone["r"], dtype=torch.bool)
        keep[gone["offset"] : gone["offset"] + gone["r"]] = False
        for layer in self.layers.values():
            layer.A, layer.B = layer.A[keep.to(layer.A.device)], layer.B[:, keep.to(layer.B.device)]
        for a in self.adapters.values():
            if a["offset"] > gone["offset"]:
                a["offset"] -= gone["r"]

    def set_rows(self, names: list[str | None], device: torch.device) -> None:
        """The mask for a forward over rows of these adapters (None: the base alone); kept
        while the batch's rows and the stack stay the same (most decode steps)."""
        key = (tuple(names), tuple((n, a["offset"]) for n, a in self.adapters.items()))
        if key == self._key:
            return
        self._key = key
        mask = torch.zeros(len(names), self.width)
        for i, name in enumerate(names):
            if name is not None:
                a = self.adapters[name]
                mask[i, a["offset"] : a["offset"] + a["r"]] = a["scale"]
        self.rows.mask = mask.to(device)
