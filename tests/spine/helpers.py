"""Small builders shared by the spine tests."""

from __future__ import annotations

import json
from pathlib import Path

from lamina.data.synthetic import task_splits
from lamina.recipe import SYNTHETIC_PROVENANCE


def write_task(directory: Path, n_train: int = 64, n_eval: int = 8) -> tuple[Path, Path]:
    train, held = task_splits(n_train=n_train, n_eval=n_eval)
    directory.mkdir(parents=True, exist_ok=True)
    tp, ep = directory / "train.jsonl", directory / "eval.jsonl"
    tp.write_text("".join(json.dumps(r) + "\n" for r in train))
    ep.write_text("".join(json.dumps(r) + "\n" for r in held))
    return tp, ep


def recipe_dict(base: Path, train: Path, **train_overrides) -> dict:
    return {
        "name": "t",
        "model": {"base": str(base)},
        "data": {"train": str(train), "max_length": 128, "licence": "internal", "provenance": SYNTHETIC_PROVENANCE},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 4, "tokens_per_step": 512, "lr": 1e-3, "log_every": 1, **train_overrides},
    }
