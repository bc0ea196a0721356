"""For bench/serve_throughput.py: register `n` LoRA versions (random, r=16 on q/k/v/o) of a
model directory in the current workspace ($LAMINA_HOME), each as `adapter<i>` at staging —
through the real register and promote (signed, gated, audited), so the server under test
serves them the way it serves any release."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml


def register_adapters(model_dir: str, runs_root: str, n: int, spare: bool = False) -> list[str]:
    """`adapter0..n-1` at staging; with `spare`, a second version of adapter0 (not promoted),
    for the swap measurement."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lamina.fsio import sha256_bytes
    from lamina.governance import access
    from lamina.models.loading import TOKENIZER_FILES, hash_model_files
    from lamina.registry import aliases, signing, tracking, versions
    from lamina.rundir import EVAL, RECIPE, RUN_JSON, TOKENIZER

    access.ensure_policy()
    signing.ensure_keys()
    base, root = Path(model_dir), Path(runs_root)
    base_info = {"ref": str(base), "path": str(base), "allow_pickle": False, **hash_model_files(base)}
    # bf16 halves the load of an 8B base; PEFT keeps the LoRA weights themselves in fp32
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16, device_map="cpu")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    refs = []
    entries = [(f"adapter{i}", f"adapter{i}", True) for i in range(n)] + [("adapter0-b", "adapter0", False)] * spare
    for i, (run_id, model_name, promote) in enumerate(entries):
        run = root / run_id
        torch.manual_seed(i)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.01)
        model.save_pretrained(run / "adapter", safe_serialization=True)
        (run / TOKENIZER).mkdir()
        for f in TOKENIZER_FILES:
            if (base / f).is_file():
                (run / TOKENIZER / f).write_bytes((base / f).read_bytes())
        method = {"name": "lora", "r": 16, "alpha": 32.0}
        (run / RECIPE).write_text(yaml.safe_dump({"name": run.name, "method": method}))
        (run / EVAL).mkdir()
        (run / EVAL / "gate.json").write_text(json.dumps({"passed": True, "checks": []}))
        (run / EVAL / "report.json").write_text(json.dumps({"candidate": {"run_id": run.name}, "results": {}}))
        signing.sign_dir(run / EVAL)  # as `lamina eval` signs its verdict
        (run / RUN_JSON).write_text(json.dumps({
            "id": run.name, "name": run.name, "status": "completed", "user": "bench", "seed": i, "method": method,
            "objective": "sft", "base": base_info, "device": "cpu", "code": {"git_commit": "bench"},
            "data": {"train": "random", "train_sha256": sha256_bytes(run.name.encode()), "licence": "none"},
        }))
        tracking.log_run(run)  # as the trainer does when a run finishes
        version = versions.register(run, model_name)["version"]
        if promote:
            aliases.promote(model_name, version, "staging", reason="serving benchmark")
            refs.append(f"{model_name}@staging")
    return refs


if __name__ == "__main__":
    import sys

    print("\n".join(register_adapters(sys.argv[1], sys.argv[2], int(sys.argv[3]), "--spare" in sys.argv)))
