"""What a run started from, stored once in the run directory, so a resume uses exactly that.

At a run's start `inputs.json` records the recipe as resolved (data rules applied), the
dataset version id and the content hashes of its train and eval records, and the base's
file hashes. `lamina train --resume` reads it back: it trains on that dataset version by
id (never taking the recipe's files in again, which could split them differently), and it
refuses when the file is missing or any input's hash no longer matches.
"""

from __future__ import annotations

from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import read_json, write_json
from lamina.recipe import Recipe

FILE = "inputs.json"
DATA_KEYS = ("dataset_version", "train_sha256", "eval_sha256")
BASE_KEYS = ("files", "tokenizer_files", "chat_template_sha256")


def write(run_dir: Path, recipe: Recipe, info: dict) -> None:
    """Record the inputs of a starting run (from its run.json record `info`)."""
    write_json(run_dir / FILE, {
        "recipe": recipe.model_dump(mode="json"),
        "data": info["data"],
        "base": {k: info["base"].get(k) for k in ("ref", "path", *BASE_KEYS)},
    })  # fmt: skip


def read(run_dir: Path) -> dict:
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise LaminaError(
            "this run did not record its inputs, so it cannot be resumed on the same data; start it again",
            str(path),
        )
    try:
        return read_json(path)
    except ValueError as e:
        raise LaminaError(f"not valid JSON: {e}", str(path)) from None


def pinned_recipe(stored: dict) -> Recipe:
    """The stored recipe, its data pointed at the dataset version the run started on."""
    recipe = dict(stored["recipe"])
    vid = (stored.get("data") or {}).get("dataset_version")
    if not vid:
        raise LaminaError("the recorded inputs name no dataset version", FILE)
    data = {k: v for k, v in recipe["data"].items() if k not in ("train", "eval", "licence", "provenance", "dataset")}
    recipe["data"] = {**data, "dataset": vid}
    return Recipe.model_validate(recipe)


def check(run_dir: Path, info: dict) -> dict:
    """Refuse unless the resumed run's data and base hash like the recorded ones; returns the
    recorded data record (file names and all), so the run's lineage reads as before."""
    stored = read(run_dir)
    where = str(Path(run_dir) / FILE)
    for key in DATA_KEYS:
        if info["data"].get(key) != stored["data"].get(key):
            raise LaminaError(f"the data differs from what the run started on ({key}); refusing to resume", where)
    for key in BASE_KEYS:
        if info["base"].get(key) != stored["base"].get(key):
            raise LaminaError(f"the base model differs from what the run started on ({key}); refusing to resume",
                              where)
    return stored["data"]
