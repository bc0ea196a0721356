"""Intake through the real trainer: the run records the dataset version it trained on, saw
only masked records, and a later withdrawal names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from intake_fixtures import write_jsonl

from lamina.data.dataset import load_training_data
from lamina.data.pii_synth import plant_pii
from lamina.data.synthetic import task_splits
from lamina.errors import LaminaError
from lamina.recipe import SYNTHETIC_PROVENANCE, parse_recipe
from lamina.registry.withdrawal import forget_subject


def _recipe(train, held, base="tiny", **data):
    return parse_recipe(
        {
            "name": "e2e",
            "model": {"base": str(base)},
            "data": {"train": str(train), "eval": str(held), "provenance": SYNTHETIC_PROVENANCE, **data},
            "intake": {"workers": 1},
            "train": {"steps": 2, "tokens_per_step": 512, "log_every": 1},
        }
    )


@pytest.fixture
def files(tmp_path):
    train, held = task_splits(n_train=80, n_eval=10, seed=3)
    planted, labels = plant_pii(train, rate=0.5, seed=3)
    for i, rec in enumerate(planted):
        rec["subject_id"] = f"cust-{i % 8}"
    assert labels
    return write_jsonl(tmp_path / "train.jsonl", planted), write_jsonl(tmp_path / "eval.jsonl", held)


def test_training_data_comes_from_intake_only(files):
    train, held = files
    with pytest.raises(LaminaError, match="^data.licence:"):
        load_training_data(_recipe(train, held))
    data = load_training_data(_recipe(train, held, licence="internal"))
    steps = json.loads((Path(data.info["dataset_path"]) / "manifest.json").read_text())["steps"]
    removed = steps["dedup"]["exact_removed"] + steps["dedup"]["near_removed"] + steps["contamination"]["removed"]
    assert len(data.train) == 80 - removed and len(data.train) >= 60 and len(data.eval) == 10
    text = json.dumps([m for r in data.train for m in r.messages])
    assert "@example" not in text and "<EMAIL_ADDRESS>" in text
    assert data.info["dataset_version"] and data.info["dataset"] == "e2e"
    assert all(r.subject_id is None for r in data.train)


@pytest.mark.slow  # trains a (tiny) model: ~8 s alone, more on a busy machine
def test_a_trained_run_is_listed_when_a_subject_withdraws(files, workspace, tmp_path):
    from lamina.models.tiny import save_untrained
    from lamina.train.runner import train as run_training

    train, held = files
    base = save_untrained(
        tmp_path / "base", hidden_size=64, num_hidden_layers=2
    )  # seconds, not a pretraining
    run_dir = run_training(_recipe(train, held, base=base, licence="internal"), progress=False)
    run = json.loads((run_dir / "run.json").read_text())
    version = run["data"]["dataset_version"]
    assert run_dir.parent == workspace / "runs" and len(version) == 64
    report = forget_subject("cust-3")
    assert [r["run"] for r in report.runs] == [run["id"]]
    assert report.versions[0]["old"] == version and report.versions[0]["new"] not in (None, version)
