"""Stages: SFT -> DPO chain with lineage, stage overrides, checks before anything runs
(the safety training set's checks are in tests/eval/test_safety_items.py)."""

from __future__ import annotations

import json

import pytest

from lamina.data.preference_synth import preference_splits
from lamina.data.synthetic import task_splits
from lamina.errors import LaminaError
from lamina.recipe import SYNTHETIC_PROVENANCE, parse_recipe
from lamina.train import stages


def _files(tmp_path):
    chat, _ = task_splits(n_train=48, n_eval=4)
    pairs, _ = preference_splits(n_train=24, n_eval=4)
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return tmp_path / "chat.jsonl", tmp_path / "pairs.jsonl"


def _recipe(base, chat, pairs, **extra):
    return parse_recipe(
        {
            "name": "layers",
            "model": {"base": str(base)},
            "data": {"train": str(chat), "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128},
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"steps": 2, "tokens_per_step": 1024, "lr": 1e-3, "log_every": 1},
            "stages": [
                {"objective": "sft"},
                {
                    "objective": "dpo",
                    "data": {
                        "train": str(pairs),
                        "format": "preference",
                        "licence": "internal", "provenance": SYNTHETIC_PROVENANCE,
                        "max_length": 128,
                    },
                    "train": {"steps": 1, "lr": 5e-4},
                    "dpo": {"beta": 0.2, "loss": "ipo"},
                },
            ],
            **extra,
        }
    )


def test_sft_then_dpo_chain_with_lineage(tiny_random, tmp_path):
    chat, pairs = _files(tmp_path)
    sft_run, dpo_run = stages.run_stages(_recipe(tiny_random, chat, pairs), progress=False)
    sft_info = json.loads((sft_run / "run.json").read_text())
    dpo_info = json.loads((dpo_run / "run.json").read_text())
    assert sft_info["parent_run"] is None and sft_info["stage"] == {"index": 0, "of": 2, "objective": "sft"}
    assert dpo_info["parent_run"] == str(sft_run) and dpo_info["objective"] == "dpo"
    # The DPO stage's input is the SFT stage's output, merged.
    assert dpo_info["base"]["path"] == str(sft_run / "merged")
    assert (sft_run / "merged" / "model.safetensors").is_file()
    dpo_recipe = (dpo_run / "recipe.yaml").read_text()
    assert "loss: ipo" in dpo_recipe and "beta: 0.2" in dpo_recipe and "lr: 0.0005" in dpo_recipe
    assert sft_info["total_steps"] == 2 and dpo_info["total_steps"] == 1
    assert dpo_run.name.startswith("layers-2-dpo")


def test_a_bad_later_stage_fails_before_the_first_runs(tiny_random, tmp_path, workspace):
    chat, pairs = _files(tmp_path)
    recipe = _recipe(tiny_random, chat, pairs)
    recipe.stages[1].data.train = str(chat)
    recipe.stages[1].data.format = "chat"
    with pytest.raises(LaminaError, match=r"stages\[1\]"):
        stages.run_stages(recipe, progress=False)
    recipe = _recipe(tiny_random, chat, pairs)
    recipe.stages.append(recipe.stages[0].model_copy(update={"objective": "ppo"}))
    with pytest.raises(LaminaError, match="reward"):
        stages.run_stages(recipe, progress=False)
    assert not (workspace / "runs").exists()


def test_stage_overrides_are_validated_with_their_key():
    with pytest.raises(LaminaError, match="stages.0.*train.lrr: unknown key"):
        parse_recipe({"data": {"train": "x.jsonl"}, "stages": [{"objective": "sft", "train": {"lrr": 1}}]})
    with pytest.raises(LaminaError, match="stages.0.objective"):
        parse_recipe({"data": {"train": "x.jsonl"}, "stages": [{"objective": "rlhf"}]})


def test_cli_prints_a_bad_stage_without_traceback_and_exits_2(tiny_random, tmp_path, workspace):
    import os
    import subprocess
    import sys

    import yaml

    chat, pairs = _files(tmp_path)
    recipe = _recipe(tiny_random, chat, pairs).model_dump(mode="json")
    recipe["stages"][1]["data"]["train"], recipe["stages"][1]["data"]["format"] = str(chat), "chat"
    path = tmp_path / "layers.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "stages", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "LAMINA_HOME": str(workspace)},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "stages[1].data" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert not (workspace / "runs").exists()


@pytest.mark.slow
def test_sft_reward_ppo_safety_chain(tiny_random, tmp_path):
    chat, pairs = _files(tmp_path)
    recipe = _recipe(tiny_random, chat, pairs)
    pair_data = recipe.stages[1].data
    recipe.stages[1] = recipe.stages[1].model_copy(update={"objective": "reward", "dpo": {}})
    recipe.stages.append(
        parse_recipe(
            {
                "data": {"train": str(chat)},
                "stages": [
                    {
                        "objective": "ppo",
                        "ppo": {
                            "iterations": 1,
                            "rollouts": 4,
                            "mini_batch": 2,
                            "epochs": 1,
                            "sampling": {"max_new_tokens": 6},
                        },
                    },
                    {"objective": "safety", "train": {"steps": 1}},
                ],
            }
        ).stages[0]
    )
    recipe.stages.append(
        parse_recipe({"data": {"train": "x"}, "stages": [{"objective": "safety"}]}).stages[0]
    )
    assert pair_data.format == "preference"
    sft_run, rm_run, ppo_run, safety_run = stages.run_stages(recipe, progress=False)
    ppo_info = json.loads((ppo_run / "run.json").read_text())
    assert ppo_info["objective"] == "ppo" and ppo_info["parent_run"] == str(sft_run)
    assert ppo_info["reward_run"] == str(rm_run) and ppo_info["reward"]["reward_model"] == str(rm_run)
    assert (rm_run / "reward_head" / "head.safetensors").is_file()
    safety_info = json.loads((safety_run / "run.json").read_text())
    assert safety_info["parent_run"] == str(ppo_run) and safety_info["objective"] == "sft"
    assert safety_info["stage"]["objective"] == "safety" and safety_info["data"]["train"].endswith(
        "safety-sft.jsonl"
    )
