"""Reward model: Bradley–Terry by hand, training through the one loop, saved head loads and
ranks held-out pairs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamina.data.formats import Preference
from lamina.data.synthetic import parse_answer, task_splits
from lamina.errors import LaminaError
from lamina.recipe import SYNTHETIC_PROVENANCE, parse_recipe
from lamina.train import runner
from lamina.train.objectives import reward


def test_bradley_terry_matches_hand_values():
    got = reward.bradley_terry(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])).tolist()
    want = [math.log1p(math.exp(-1.0)), math.log(2), math.log1p(math.exp(3.0))]
    assert got == pytest.approx(want, rel=1e-6)


def _pairs(records):
    """Chosen: the structured answer; rejected: the same facts as a rambling sentence."""
    out = []
    for r in records:
        answer = r["messages"][-1]["content"]
        parts = parse_answer(answer)
        rambling = f"well i think it goes to {parts['team']} maybe, not sure about the rest"
        out.append({"prompt": r["messages"][:-1], "chosen": answer, "rejected": rambling})
    return out


def test_reward_model_trains_saves_and_ranks_held_out_pairs(tiny_random, tmp_path):
    train, held = task_splits(n_train=64, n_eval=24)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in _pairs(train)))
    recipe = parse_recipe(
        {
            "name": "rm",
            "model": {"base": str(tiny_random)},
            "data": {"train": str(path), "format": "preference", "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128},
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {
                "objective": "reward",
                "steps": 16,
                "tokens_per_step": 2048,
                "lr": 3e-3,
                "log_every": 4,
            },
        }
    )
    run_dir = runner.train(recipe, progress=False)
    assert (run_dir / "reward_head" / "head.safetensors").is_file() and (run_dir / "adapter").is_dir()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"] and metrics[-1]["accuracy"] > 0.9

    rm = reward.load_reward_model(run_dir)
    held_pairs = [Preference(p["prompt"], p["chosen"], p["rejected"]) for p in _pairs(held)]
    result = reward.pair_accuracy(rm, held_pairs)
    assert result["pair_accuracy"] >= 0.9 and result["mean_margin"] > 0
    # The head is really the trained one: a fresh random head would not rank these pairs.
    torch.manual_seed(0)
    rm.head.weight.data.normal_()
    assert reward.pair_accuracy(rm, held_pairs)["mean_margin"] != pytest.approx(result["mean_margin"])


def test_a_policy_run_is_not_a_reward_model(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"objective": "sft"}))
    with pytest.raises(LaminaError, match="reward_head"):
        reward.load_reward_model(tmp_path)
