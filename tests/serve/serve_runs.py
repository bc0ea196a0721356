"""Serving test helpers. Run directories with real LoRA adapters on the session's tiny random base, shaped like the
trainer's output, so serving tests register real, servable versions without training."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch
import yaml

from lamina.fsio import sha256_bytes
from lamina.models.loading import TOKENIZER_FILES, hash_model_files
from lamina.rundir import EVAL, METRICS, RECIPE, RUN_JSON, TOKENIZER


def make_lora_run(root: Path, run_id: str, base: Path, seed: int, user: str = "alice",
                  method: str = "lora") -> Path:
    """A completed run whose adapter has random (non-zero) LoRA B matrices: each seed answers
    differently from the base and from every other seed."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = root / run_id
    (run / EVAL).mkdir(parents=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    model.save_pretrained(run / "adapter", safe_serialization=True)
    (run / TOKENIZER).mkdir()
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, run / TOKENIZER / name)
    recipe = {"name": run_id, "seed": seed, "model": {"base": str(base)}, "data": {"train": "/data/train.jsonl"},
              "method": {"name": method, "r": 4, "alpha": 8.0}}
    (run / RECIPE).write_text(yaml.safe_dump(recipe))
    (run / METRICS).write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 0.001, "tokens": 10}) + "\n")
    info = {
        "id": run_id, "name": run_id, "status": "completed", "user": user, "seed": seed,
        "started": "2026-12-01T10:00:00+0000", "finished": "2026-12-01T10:01:00+0000",
        "method": recipe["method"], "objective": "sft", "steps": 1, "tokens": 10, "device": "cpu",
        "base": {"ref": str(base), "path": str(base), "allow_pickle": False, **hash_model_files(base)},
        "data": {"train": "/data/train.jsonl", "train_sha256": sha256_bytes(run_id.encode()), "licence": "internal"},
        "code": {"git_commit": "test", "dirty": False},
        "versions": {"torch": torch.__version__},
    }
    (run / RUN_JSON).write_text(json.dumps(info))
    gate = {"passed": True, "checks": [{"expr": "task.exact_match >= 0.0", "value": 1.0, "threshold": 0.0,
                                        "passed": True}]}
    (run / EVAL / "gate.json").write_text(json.dumps(gate))
    report = {"candidate": {"run_id": run_id}, "results": {"candidate": {"task": {"exact_match": 1.0}}}}
    (run / EVAL / "report.json").write_text(json.dumps(report))  # signed per workspace by the fixture
    write_prompt_reference(run, base)
    return run


# The held-out prompts the runs are "evaluated" on: their token counts become each version's
# input-drift reference, kept as `lamina eval` keeps it.
EVAL_PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "where is my order", "my kettle arrived broken", "I was charged twice for order 4821",
        "the blue lamp is the wrong colour, please swap it", "can I return a gift without a receipt",
        "refund please", "the speaker from order 3877 stopped working after two days, what now",
        "how long does delivery take", "cancel my order", "wrong item again, third time this month",
    )
]


def write_prompt_reference(run: Path, base: Path) -> None:
    from transformers import AutoTokenizer

    from lamina.data.formats import Example
    from lamina.eval import inputs

    records = [Example([*p, {"role": "assistant", "content": "ok"}]) for p in EVAL_PROMPTS]
    ref = inputs.reference(AutoTokenizer.from_pretrained(str(base)), records)
    (run / EVAL / inputs.REFERENCE).write_text(json.dumps(ref))


@contextlib.contextmanager
def running(refs, **spec):
    """A real server on 127.0.0.1 (free port) in a background thread; closed on exit."""
    from lamina.recipe import ServeSpec
    from lamina.serve.server import Server

    server = Server(refs, ServeSpec(**{"port": 0, "poll_s": 0.2, **spec}), device="cpu")
    server.load()
    server.start_background()
    try:
        yield server
    finally:
        server.close()


def client_for(server, key: str | None):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=key or "none", timeout=30,
                         max_retries=0)


def issue_key(**kwargs) -> str:
    from lamina.registry.release import acting_as
    from lamina.serve import keys

    with acting_as("admin"):
        return keys.issue(**kwargs)["key"]
