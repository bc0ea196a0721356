"""MLflow as MLflow users expect: a run is there (RUNNING, with curves) while it trains, ends
with its real start and end times, carries plain params, its author and its dataset version as
a logged input, gets `lamina eval`'s numbers, and lives in a classic (non-GenAI) experiment."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from registry_runs import make_run

from lamina.registry import tracking
from lamina.registry.live import LiveRun
from lamina.registry.tracking import millis


def test_a_run_is_running_with_curves_before_it_finishes(tmp_path):
    run_dir = make_run(tmp_path, "run-live", steps=3, logged=False)
    info = json.loads((run_dir / "run.json").read_text())
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    live = LiveRun(run_dir, {**info, "status": "running"}, recipe)
    c = tracking.client()
    before = int(time.time() * 1000)
    live.log({"step": 1, "loss": 2.0, "tokens_per_s": 100.0})
    seen = c.get_run(live.rid)
    assert seen.info.status == "RUNNING" and seen.info.start_time == millis(info["started"])
    (loss,) = c.get_metric_history(live.rid, "loss")
    assert (loss.step, loss.value) == (1, 2.0) and loss.timestamp >= before
    # the finished run directory completes the same MLflow run, not a second one
    info["mlflow_run_id"] = live.rid
    (run_dir / "run.json").write_text(json.dumps(info))
    assert tracking.log_run(run_dir) == live.rid
    done = c.get_run(live.rid)
    assert done.info.status == "FINISHED"
    assert done.info.end_time - done.info.start_time == 60_000  # run.json: 01:00:00 -> 01:01:00
    assert sorted((m.step, m.value) for m in c.get_metric_history(live.rid, "loss")) == [
        (1, 2.0), (2, 1.0), (3, 2.0 / 3)]  # fmt: skip
    assert len(c.search_runs([tracking.experiment_id()])) == 1


def test_a_run_logged_afterwards_gets_real_times_plain_params_author_and_dataset(tmp_path):
    run_dir = make_run(tmp_path, "run-after", user="carol", logged=False)
    rid = tracking.log_run(run_dir)
    c = tracking.client()
    run = c.get_run(rid)
    assert (run.info.start_time, run.info.end_time) == (
        millis("2026-11-29T01:00:00+0000"), millis("2026-11-29T01:01:00+0000"))  # fmt: skip
    assert run.data.params["method.name"] == "lora" and run.data.params["train.lr"] == "0.003"
    assert run.data.tags["mlflow.user"] == "carol"
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == "ds-tickets-001" and inp.dataset.source_type == "local"
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    losses = sorted(c.get_metric_history(rid, "loss"), key=lambda m: m.step)
    assert losses[0].timestamp >= run.info.start_time  # not the epoch


def test_train_then_eval_reach_mlflow(tiny_random, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
    from helpers import recipe_dict, write_task

    from lamina.eval import harness
    from lamina.recipe import parse_recipe
    from lamina.train import runner

    train_file, eval_file = write_task(tmp_path, n_train=16, n_eval=4)
    d = recipe_dict(tiny_random, train_file, steps=3)
    d["data"]["eval"] = str(eval_file)
    d["eval"] = {"suites": ["task"], "max_items": 4, "max_new_tokens": 4}
    run_dir = runner.train(parse_recipe(d), progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    c = tracking.client()
    run = c.get_run(info["mlflow_run_id"])  # opened when training started
    assert run.info.status == "FINISHED" and run.info.start_time == millis(info["started"])
    assert run.data.params["method.name"] == "lora" and run.data.tags["lamina.logged"] == "true"
    assert [m.step for m in sorted(c.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)] == [
        1,
        2,
        3,
    ]
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == info["data"]["dataset_version"][:36]
    doc = harness.run(str(run_dir), progress=False)
    assert doc["mlflow_run_id"] == run.info.run_id
    after = c.get_run(run.info.run_id).data.metrics
    assert after["eval.task.exact_match"] == doc["results"]["candidate"]["task"]["exact_match"]


@pytest.mark.slow  # 40 s at load 12 on 2 cores (W&B starts its own service process)
def test_report_to_tensorboard_and_wandb_offline(tiny_random, tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
    from helpers import recipe_dict, write_task
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lamina.recipe import parse_recipe
    from lamina.train import runner

    monkeypatch.setenv("WANDB_SILENT", "true")
    train_file, _ = write_task(tmp_path, n_train=16)
    d = recipe_dict(tiny_random, train_file, steps=3)
    d["tracking"] = {"report_to": ["mlflow", "tensorboard", "wandb"], "wandb_mode": "offline"}
    run_dir = runner.train(parse_recipe(d), progress=False)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tb = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in tb] == [1, 2, 3]
    assert all(abs(v - loss) < 1e-6 for (_, v), loss in zip(tb, losses, strict=True))
    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = offline.read_bytes()  # W&B's own record log: the history values travel as JSON text
    assert b"train/loss" in data and json.dumps(losses[-1]).encode() in data


def test_report_to_must_keep_mlflow():
    from lamina.errors import LaminaError
    from lamina.recipe import parse_recipe

    with pytest.raises(LaminaError, match="tracking.report_to: Value error, must include mlflow"):
        parse_recipe({"data": {"dataset": "x"}, "tracking": {"report_to": ["wandb"]}})
