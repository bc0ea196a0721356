"""Training data as the runner sees it: records read from the recipe's files, validated,
with their content hashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lamina.data.formats import Record, read_jsonl, record_to_json
from lamina.fsio import sha256_json
from lamina.recipe import Recipe


@dataclass
class TrainingData:
    train: list[Record]
    eval: list[Record]
    info: dict = field(default_factory=dict)  # recorded in run.json under "data"


def records_sha256(records: list[Record]) -> str:
    return sha256_json([record_to_json(r) for r in records])


def load_training_data(recipe: Recipe) -> TrainingData:
    spec = recipe.data
    train = read_jsonl(spec.train, spec.format)
    held = read_jsonl(spec.eval, spec.format) if spec.eval else []
    info = {
        "train": str(Path(spec.train).resolve()),
        "train_sha256": records_sha256(train),
        "eval": str(Path(spec.eval).resolve()) if spec.eval else None,
        "eval_sha256": records_sha256(held) if held else None,
        "format": spec.format,
    }
    return TrainingData(train, held, info)
