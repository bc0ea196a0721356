"""Folding a trained update into its base: a plain Hugging Face model directory."""

from __future__ import annotations

from pathlib import Path

from lamina import methods, rundir
from lamina.errors import LaminaError
from lamina.fsio import atomic_dir
from lamina.methods.trained import load_model


def merge_run(run_dir: Path, output: Path) -> Path:
    run_dir, output = Path(run_dir), Path(output)
    if not rundir.is_run_dir(run_dir):
        raise LaminaError("not a Lamina run directory (no run.json)", str(run_dir))
    if output.exists():
        raise LaminaError("already exists; choose a new directory", str(output))
    method = methods.get(rundir.read_run(run_dir)["method"]["name"])
    if not getattr(method, "MERGEABLE", False):
        raise LaminaError(f"method {method.__name__.rsplit('.', 1)[-1]!r} cannot be merged into the base: "
                          "it adds computation the base has no place for; serve it with its adapter", str(run_dir))
    model, tokenizer = load_model(run_dir)
    merged = method.merge(model)
    with atomic_dir(output) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return output
