"""Training data as the runner sees it: the masked records of a dataset version (the
recipe's files, taken in), validated, with their content hashes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lamina.data.formats import Record, parse_record, record_to_json
from lamina.fsio import sha256_json
from lamina.recipe import Recipe


@dataclass
class TrainingData:
    train: list[Record]
    eval: list[Record]
    info: dict = field(default_factory=dict)  # recorded in run.json under "data"
    # For data loaded with defer_commit: write the taken-in version, or forget it.
    commit: Callable[[], None] = lambda: None
    discard: Callable[[], None] = lambda: None


def records_sha256(records: list[Record]) -> str:
    return sha256_json([record_to_json(r) for r in records])


def _located(ref: str | None) -> str | None:
    """A file's absolute path; a `hub:` dataset stays as written."""
    if not ref or ref.startswith("hub:"):
        return ref
    return str(Path(ref).resolve())


def load_training_data(recipe: Recipe, defer_commit: bool = False) -> TrainingData:
    """Training sees only what passed intake: raw recipe files are taken in first (with the
    licence the recipe declares, refused without one), a named dataset version is used as
    is, and every source's licence must be one the recipe accepts. With `defer_commit` nothing
    is written until `commit()` (see intake.training.prepare_for_training)."""
    from lamina.data.intake import prepare_for_training

    spec = recipe.data
    prepared = prepare_for_training(recipe, defer_commit)
    fmt = prepared.format
    try:
        train = [
            parse_record(r, fmt, f"{prepared.path}/train.jsonl:{i}") for i, r in enumerate(prepared.train, 1)
        ]
        held = [parse_record(r, fmt, f"{prepared.path}/eval.jsonl:{i}") for i, r in enumerate(prepared.eval, 1)]
    except BaseException:
        prepared.discard()
        raise
    info = {
        "train": _located(spec.train),
        "train_sha256": records_sha256(train),
        "eval": _located(spec.eval),
        "eval_sha256": records_sha256(held) if held else None,
        "format": fmt,
        "dataset": spec.dataset or prepared.manifest["name"],
        "dataset_version": prepared.version_id,
        "dataset_path": str(prepared.path),
    }
    return TrainingData(train, held, info, prepared.commit, prepared.discard)
