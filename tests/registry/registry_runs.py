"""Run directories shaped like the trainer's output (run.json, recipe.yaml, metrics.jsonl,
adapter/ in PEFT format, tokenizer/, eval/gate.json), written directly so registry tests do
not pay for training. test_end_to_end.py uses the real trainer instead."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from lamina.fsio import sha256_bytes
from lamina.registry import signing, tracking


def make_run(
    root: Path,
    run_id: str,
    *,
    user: str = "alice",
    passed: bool = True,
    dataset: str | None = "ds-tickets-001",
    base_path: str | None = None,
    seed: int = 0,
    steps: int = 5,
    logged: bool = True,
) -> Path:
    run = root / run_id
    (run / "adapter").mkdir(parents=True)
    (run / "tokenizer").mkdir()
    (run / "eval").mkdir()
    weights = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.full((4, 16), float(seed + 1))
    }
    save_file(weights, str(run / "adapter" / "adapter_model.safetensors"))
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (run / "tokenizer" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}, "seed": seed}))
    recipe = {
        "name": run_id,
        "seed": seed,
        "data": {"train": "/data/train.jsonl"},
        "train": {"lr": 0.003, "steps": steps},
        "method": {"name": "lora", "r": 4, "alpha": 8.0},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "loss": 2.0 / s, "lr": 0.003, "tokens": 100 * s}) + "\n"
            for s in range(1, steps + 1)
        )
    )
    data = {
        "train": "/data/train.jsonl",
        "train_sha256": sha256_bytes(b"train" + run_id.encode()),
        "eval": "/data/eval.jsonl",
        "eval_sha256": sha256_bytes(b"eval"),
        "licence": "CC-BY-4.0",
    }
    if dataset:
        data["dataset_version"] = dataset
    info = {
        "id": run_id,
        "name": run_id,
        "status": "completed",
        "user": user,
        "seed": seed,
        "started": "2026-11-29T01:00:00+0000",
        "finished": "2026-11-29T01:01:00+0000",
        "method": recipe["method"],
        "objective": "sft",
        "steps": steps,
        "tokens": 100 * steps,
        "device": "cpu",
        "base": {
            "ref": base_path or "tiny",
            "path": base_path or "/bases/tiny",
            "files": {"model.safetensors": sha256_bytes(b"w")},
            "tokenizer_files": {"tokenizer.json": sha256_bytes(b"t")},
            "chat_template_sha256": sha256_bytes(b"tmpl"),
        },
        "data": data,
        "code": {"git_commit": "abc123", "dirty": False},
        "versions": {"torch": torch.__version__, "lamina": "0.1.0"},
    }
    (run / "run.json").write_text(json.dumps(info))
    checks = [
        {
            "expr": "task.exact_match >= 0.5",
            "value": 0.8 if passed else 0.2,
            "threshold": 0.5,
            "passed": passed,
        }
    ]
    (run / "eval" / "gate.json").write_text(json.dumps({"passed": passed, "checks": checks}))
    results = {"candidate": {"task": {"exact_match": checks[0]["value"]}}}
    (run / "eval" / "report.json").write_text(json.dumps({"candidate": {"run_id": run_id}, "results": results}))
    # Signed as `lamina eval` signs its output: register refuses an unsigned verdict.
    signing.ensure_keys()
    signing.sign_dir(run / "eval")
    if logged:
        tracking.log_run(run)  # as the trainer does when a run finishes
    return run
