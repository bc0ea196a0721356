"""Slow: every method learns the bundled task on the pretrained tiny base with the demo's
settings (assets/demo.yaml, with the method's own training settings from its method_settings) — loss falls, and held-out
exact match rises above the base model's."""

from __future__ import annotations

import json
import os
from importlib import resources

import pytest
import yaml

from lamina.data.synthetic import task_splits, write_jsonl
from lamina.recipe import SYNTHETIC_PROVENANCE, parse_recipe

DEMO = yaml.safe_load(resources.files("lamina").joinpath("assets/demo.yaml").read_text())
HELD_OUT = 40


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The pretrained tiny base, built once for this module in its own workspace."""
    from lamina.train.tiny_base import ensure_tiny_base

    previous = os.environ.get("LAMINA_HOME")
    os.environ["LAMINA_HOME"] = str(tmp_path_factory.mktemp("tiny-home"))
    try:
        return ensure_tiny_base(progress=False)
    finally:
        if previous is None:
            del os.environ["LAMINA_HOME"]
        else:
            os.environ["LAMINA_HOME"] = previous


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_base):
    from lamina.demo import held_out_em

    directory = tmp_path_factory.mktemp("task")
    train, held = task_splits()
    write_jsonl(directory / "train.jsonl", train)
    write_jsonl(directory / "eval.jsonl", held)
    return directory, held[:HELD_OUT], held_out_em(tiny_base, held[:HELD_OUT])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEMO["method_settings"]))
def test_method_learns_the_task(tiny_base, task, name):
    from lamina.demo import held_out_em
    from lamina.train.runner import train

    directory, held, base_em = task
    data = json.loads(json.dumps(DEMO))
    settings = dict(data.pop("method_settings")[name])
    data["model"]["base"] = str(tiny_base)
    data["data"].update(
        train=str(directory / "train.jsonl"), eval=str(directory / "eval.jsonl"), licence="internal",
        provenance=SYNTHETIC_PROVENANCE,
    )
    data["method"], data["name"] = {"name": name, **settings.pop("method", {})}, f"demo-{name}"
    data["train"].update(settings)
    run_dir = train(parse_recipe(data), progress=False)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0], losses
    em = held_out_em(run_dir, held)
    assert em > base_em, (em, base_em)
