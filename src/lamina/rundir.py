"""The run directory's layout: the one place that names a run's files.

Training writes a run directory; the evaluation harness, the registry, tracking, withdrawal
and the loaders read it. All of them take the names from here:

    RUN_DIR/
      run.json          what ran: recipe summary, base and data hashes, status, figures
      recipe.yaml       the recipe as validated
      metrics.jsonl     one JSON object per logged step
      loss.png          the training-loss plot
      tokenizer/        the tokenizer the run trained with
      checkpoints/      step-NNNNNN/ resumable checkpoints
      adapter/ | model/ the method's artifact (lamina.methods: ARTIFACT)
      ...               an objective's extras (DPO's reference log-probs, a reward model's head)
      eval/             an evaluation report of this run, when one was written here
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.recipe import Recipe

RUN_JSON = "run.json"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
EVAL = "eval"


def runs_root() -> Path:
    """The workspace's area for run directories."""
    return workspace.subdir("runs")


def check_output(recipe: Recipe) -> None:
    """`output.dir` must be a new or empty directory; checked before anything is written."""
    if not recipe.output.dir:
        return
    path = Path(recipe.output.dir)
    if path.exists() and not path.is_dir():
        raise LaminaError(f"{path} is a file; name a new or empty directory", "output.dir")
    if path.is_dir() and any(path.iterdir()):
        raise LaminaError(f"{path} exists and is not empty (resume with `lamina train --resume {path}`)",
                          "output.dir")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise LaminaError(f"{blocker} is a file, so {path} cannot be made", "output.dir")


def new_run_dir(recipe: Recipe) -> Path:
    """`output.dir` when the recipe gives one (it must be empty), else a fresh name under runs/."""
    check_output(recipe)
    if recipe.output.dir:
        return Path(recipe.output.dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_root() / f"{recipe.name}-{stamp}-{secrets.token_hex(2)}"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


def read_run(run_dir: Path) -> dict:
    """The run's run.json."""
    return read_json(Path(run_dir) / RUN_JSON)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metrics_line(record: dict) -> str:
    """One metrics.jsonl line (with its newline)."""
    return json.dumps(record) + "\n"
