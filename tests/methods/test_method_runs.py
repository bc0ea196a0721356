"""Every method end to end through the runner: the run directory loads with `load_model`,
and `lamina merge` either writes a plain model with the same logits or says it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from method_helpers import SPECS, logits

from lamina.methods.trained import load_model
from lamina.recipe import parse_recipe
from lamina.train import runner
from lamina.train.merge import merge_run

sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
from helpers import recipe_dict, write_task  # noqa: E402

FAST = {"prefix"}  # fast: a method that cannot merge (the spine tests merge a LoRA run)


def train_run(tiny_random, tmp_path, name: str) -> Path:
    train_file, _ = write_task(tmp_path / "data", n_train=16, n_eval=2)
    data = recipe_dict(tiny_random, train_file, steps=2, tokens_per_step=256, lr=3e-2)
    data["method"] = SPECS[name]
    data["output"] = {"dir": str(tmp_path / "run")}
    return runner.train(parse_recipe(data), progress=False)


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(SPECS)]
)
def test_run_loads_and_merges_or_refuses(tiny_random, tmp_path, name):
    run_dir = train_run(tiny_random, tmp_path, name)
    model, tokenizer = load_model(run_dir)
    base, _ = load_model(tiny_random)
    trained = logits(model.eval(), tokenizer)
    assert (
        float((trained[:, -5:] - logits(base.eval(), tokenizer)[:, -5:]).abs().max()) > 1e-4
    )  # adapter applied

    out = tmp_path / "merged"
    from lamina import methods

    if methods.get(name).MERGEABLE:
        merge_run(run_dir, out)
        merged, _ = load_model(out)
        assert float((logits(merged.eval(), tokenizer) - trained).abs().max()) < 1e-4
        return
    env = {**os.environ, "LAMINA_HOME": os.environ["LAMINA_HOME"]}
    r = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "merge", str(run_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "cannot be merged" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
