"""`lamina methods`: every adaptation method measured on one base model.

Each method is applied to a fresh copy of the base; the trainable parameters are counted and
the artifact is actually saved (to a temporary directory) and its bytes summed, so the table
reports what a run of that method would store. The recipe's own method keeps its settings;
the others use their recipe defaults.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import TypeAdapter

from lamina import methods
from lamina.errors import LaminaError
from lamina.models.loading import load_hf_model, pick_device
from lamina.recipe import MethodSpec, Recipe


def spec_for(name: str, recipe: Recipe | None):
    if recipe is not None and recipe.method.name == name:
        return recipe.method
    return TypeAdapter(MethodSpec).validate_python({"name": name})


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def serving(name: str) -> str:
    """How `lamina serve` serves the method (methods.SERVING), in words."""
    return {
        "shared": "batched: adapters share the base, mixed per row",
        "own": "own model copy, batched among its requests",
        "uncached": "own model, one row at a time, no KV cache",
    }[methods.SERVING[name]]


def measure_one(name: str, base_dir: Path, spec, device: torch.device) -> dict:
    method = methods.get(name)
    dtype = torch.bfloat16 if device.type == "cuda" and name != "full" else torch.float32
    model = load_hf_model(base_dir, device, dtype)
    total = sum(p.numel() for p in model.parameters())  # counted before a method may quantise it
    model = method.apply(model, spec)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory(prefix="lamina-methods-") as tmp:
        method.save(model, Path(tmp))
        size = directory_bytes(Path(tmp))
    del model
    return {
        "method": name,
        "trainable_params": trainable,
        "trainable_pct": round(100.0 * trainable / total, 4),
        "base_params": total,
        "artifact_bytes": size,
        "artifact": method.ARTIFACT,
        "mergeable": bool(method.MERGEABLE),
        "serving": serving(name),
        "inference_overhead": method.overhead(spec),
    }


def measure(base_dir: Path, recipe: Recipe | None = None, on_method: Callable[[str], None] | None = None) -> dict:
    """{"base": path, "methods": [row per method]} for the base in `base_dir` (the recipe's,
    resolved by the caller; the recipe's method keeps its settings)."""
    device = pick_device()
    rows = []
    for name in methods.NAMES:
        if on_method:
            on_method(name)
        try:
            rows.append(measure_one(name, base_dir, spec_for(name, recipe), device))
        except LaminaError as e:  # e.g. QLoRA without bitsandbytes: the other rows still stand
            rows.append({"method": name, "error": str(e)})
    return {"base": str(base_dir), "device": str(device), "methods": rows}
