"""Resuming and refusing runs in one process: the fast cover for the subprocess tests in
test_training.py (SIGKILL + resume, bad inputs through a real CLI process), which are slow."""

from __future__ import annotations

import shutil
import sys

import pytest
import yaml
from helpers import recipe_dict, write_task

from lamina import rundir
from lamina.errors import LaminaError
from lamina.fsio import write_json
from lamina.recipe import parse_recipe
from lamina.train import runner


def _losses(run_dir):
    return [(m["step"], m["loss"]) for m in rundir.read_metrics(run_dir)]


def test_resume_from_a_mid_run_checkpoint_redoes_the_later_steps_exactly(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=64)
    d = recipe_dict(tiny_random, train_file, steps=10, checkpoint_every=3, lr=5e-3)
    d["method"]["dropout"] = 0.1  # RNG state matters too
    d["output"] = {"dir": str(tmp_path / "run")}
    run_dir = runner.train(parse_recipe(d), progress=False)
    reference = _losses(run_dir)
    assert [s for s, _ in reference] == list(range(1, 11))
    # What a process killed after step 7 leaves: the step-6 checkpoint is the last, run.json
    # says running, and metrics.jsonl holds steps past the checkpoint, each to be redone once.
    for ckpt in (run_dir / rundir.CHECKPOINTS).iterdir():
        if int(ckpt.name.split("-")[1]) > 6:
            shutil.rmtree(ckpt)
    info = rundir.read_run(run_dir)
    write_json(run_dir / rundir.RUN_JSON, {**info, "status": "running"})
    (run_dir / rundir.METRICS).write_text("".join(rundir.metrics_line(m) for m in rundir.read_metrics(run_dir)[:7]))
    runner.resume(run_dir, progress=False)
    resumed = _losses(run_dir)
    assert [s for s, _ in resumed] == list(range(1, 11))
    for (_, a), (_, b) in zip(reference, resumed, strict=True):
        assert abs(a - b) < 1e-5
    after = rundir.read_run(run_dir)
    assert after["status"] == "completed" and after["started"] == info["started"]
    with pytest.raises(LaminaError, match="already completed"):
        runner.resume(run_dir, progress=False)


def test_bad_inputs_exit_2_name_the_problem_and_leave_no_run(tiny_random, tmp_path, workspace, monkeypatch,
                                                             capsys):
    from lamina.cli import main

    train_file, _ = write_task(tmp_path, n_train=8)
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text(train_file.read_text().splitlines()[0] + "\n{not json\n")
    cases = {
        "typo.yaml": ({**recipe_dict(tiny_random, train_file), "trian": {}}, "trian: unknown key"),
        "nobase.yaml": ({**recipe_dict(tiny_random, train_file), "model": {"base": str(tmp_path / "nope")}},
                        "model.base: no such model directory"),
        "wrongtype.yaml": ({**recipe_dict(tiny_random, train_file), "seed": "abc"}, "seed: Input should be"),
        "baddata.yaml": (recipe_dict(tiny_random, bad_data), f"{bad_data}:2: malformed JSON"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(yaml.safe_dump(data))
        monkeypatch.setattr(sys, "argv", ["lamina", "train", str(tmp_path / name)])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (name, err)
        assert message in " ".join(err.split()), (name, err)
        runs = workspace / "runs"
        assert not runs.exists() or not any(runs.iterdir()), name
