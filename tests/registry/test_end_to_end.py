"""The release path on real components: the real trainer writes a LoRA run, the real eval
harness writes its gate, the run is tracked, registered, promoted, resolved, loaded and
generates exactly what the run itself generates; a flipped weight byte is refused."""

from __future__ import annotations

import pytest

from lamina.recipe import SYNTHETIC_PROVENANCE

pytestmark = pytest.mark.slow


def _mini_base(root):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lamina.data import synthetic
    from lamina.models.tiny import build_tokenizer

    tok = build_tokenizer(synthetic.pretraining_corpus(300), 384)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return root / "base"


def _run(root, base, name, seed):
    import yaml

    from lamina.data import synthetic
    from lamina.recipe import load_recipe
    from lamina.train.runner import train

    train_rows, eval_rows = synthetic.task_splits(64, 12, seed=seed)
    synthetic.write_jsonl(root / f"{name}-train.jsonl", train_rows)
    synthetic.write_jsonl(root / f"{name}-eval.jsonl", eval_rows)
    recipe = {
        "name": "tickets",
        "seed": seed,
        "model": {"base": str(base)},
        "data": {
            "train": str(root / f"{name}-train.jsonl"),
            "eval": str(root / f"{name}-eval.jsonl"),
            "licence": "CC0-1.0", "provenance": SYNTHETIC_PROVENANCE,
        },
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 3, "tokens_per_step": 512, "lr": 3e-3, "log_every": 1},
        "eval": {"suites": ["task"], "gates": ["task.exact_match >= 0"], "max_items": 4, "max_new_tokens": 8},
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    return train(load_recipe(root / f"{name}.yaml"), progress=False)


def test_train_eval_register_promote_resolve_load(tmp_path, monkeypatch):
    import json

    from lamina.errors import LaminaError
    from lamina.eval import harness
    from lamina.governance import access, identity
    from lamina.methods.trained import load_model
    from lamina.models.generate import generate
    from lamina.registry import aliases, resolve, tracking, versions

    monkeypatch.setenv("LAMINA_USER", "alice")
    access.init_policy("alice")
    identity.create_key("bob")
    access.grant("bob", "approver")
    base = _mini_base(tmp_path)
    run_dir = _run(tmp_path, base, "a", seed=0)
    doc = harness.run(str(run_dir), progress=False)
    assert doc["gate"]["passed"] is True and (run_dir / "eval" / "gate.json").is_file()

    # the runner itself logged the run; registering reuses that MLflow run
    logged_by_runner = tracking.find_run(run_dir.name)
    assert logged_by_runner is not None
    v = versions.register(run_dir, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", v["version"], "production", reason="e2e")
    path = resolve("tickets@production")
    assert str(path) == v["path"]
    card = (path / "README.md").read_text()
    assert "\nlicense: cc0-1.0\n" in card and "base_model_relation: adapter" in card

    mv = tracking.client().get_model_version("tickets", str(v["version"]))
    assert mv.run_id == logged_by_runner
    run = tracking.client().get_run(mv.run_id)
    logged = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    history = sorted(tracking.client().get_metric_history(mv.run_id, "loss"), key=lambda m: m.step)
    assert [m.value for m in history] == [r["loss"] for r in logged if "loss" in r]
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run.data.tags["lamina.base.chat_template_sha256"] == str(run_json["base"]["chat_template_sha256"])
    assert run.data.tags["lamina.code.git_commit"] == str(run_json["code"]["git_commit"])
    gate = json.loads((run_dir / "eval" / "gate.json").read_text())
    assert run.data.metrics["eval.task.exact_match"] == gate["results"]["task"]["exact_match"]
    assert "eval/gate.json" in {a.path for a in tracking.client().list_artifacts(mv.run_id, "eval")}

    prompts = [[{"role": "user", "content": "Order 4821: the blue kettle arrived broken."}]]
    model_r, tok_r = load_model(run_dir)
    model_v, tok_v = load_model(path)
    assert generate(model_v, tok_v, prompts, max_new_tokens=12) == generate(
        model_r, tok_r, prompts, max_new_tokens=12
    )

    weights = path / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_model.safetensors"):
        resolve("tickets@production")
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_model.safetensors"):
        load_model(path)  # the loader checks too, not only the registry
