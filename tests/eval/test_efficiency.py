"""Training cost read from run.json."""

from __future__ import annotations

import pytest

from lamina.eval.suites.efficiency import training_cost


def test_gpu_hours_count_every_gpu_and_cpu_runs_cost_none():
    assert (
        training_cost({"device": "cuda:0", "train_seconds": 7200, "world_size": 2, "tokens": 5})["gpu_hours"]
        == 4.0
    )
    assert training_cost({"device": "cuda", "train_seconds": 1800})["gpu_hours"] == 0.5
    cpu = training_cost({"device": "cpu", "train_seconds": 60.0, "tokens": 123})
    assert cpu == {"train_tokens": 123, "train_seconds": 60.0, "gpu_hours": 0.0}


def test_seconds_fall_back_to_the_timestamps():
    run = {"device": "cuda:0", "started": "2026-11-29T01:00:00+0000", "finished": "2026-11-29T01:30:00+0000"}
    assert training_cost(run)["train_seconds"] == pytest.approx(1800.0)
    assert training_cost(run)["gpu_hours"] == pytest.approx(0.5)
    assert training_cost({"device": "cpu", "started": "garbled"})["train_seconds"] is None
    assert training_cost(None) == {"train_tokens": None, "train_seconds": None, "gpu_hours": None}
