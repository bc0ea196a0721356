"""Tracking: a run directory becomes an MLflow run carrying every provenance hash; secrets never do."""

from __future__ import annotations

import json

import pytest
from registry_runs import make_run

from lamina.errors import LaminaError
from lamina.fsio import sha256_json
from lamina.registry import tracking


def test_log_run_records_provenance_params_and_metrics(tmp_path):
    run_dir = make_run(tmp_path, "run-a", seed=7, steps=5, logged=False)
    rid = tracking.log_run(run_dir)
    c = tracking.client()
    run = c.get_run(rid)
    info = json.loads((run_dir / "run.json").read_text())
    assert run.data.params["train.lr"] == "0.003"
    assert run.data.params["method.r"] == "4"
    tags = run.data.tags
    assert tags["lamina.seed"] == "7"
    assert tags["lamina.dataset_version"] == "ds-tickets-001"
    assert tags["lamina.code.git_commit"] == "abc123"
    assert tags["lamina.base.files_sha256"] == sha256_json(info["base"]["files"])
    assert tags["lamina.base.chat_template_sha256"] == info["base"]["chat_template_sha256"]
    assert tags["lamina.data.train_sha256"] == info["data"]["train_sha256"]
    assert tags["lamina.versions.lamina"] == "0.1.0"
    history = c.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (s, 2.0 / s) for s in range(1, 6)
    ]
    artifacts = {a.path for a in c.list_artifacts(rid)}
    assert {"run.json", "recipe.yaml", "metrics.jsonl", "adapter", "tokenizer", "eval"} <= artifacts
    assert {a.path for a in c.list_artifacts(rid, "adapter")} == {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }
    assert run.info.status == "FINISHED"


def test_log_run_is_idempotent(tmp_path):
    run_dir = make_run(tmp_path, "run-a", logged=False)
    first = tracking.log_run(run_dir)
    assert tracking.log_run(run_dir) == first
    assert len(tracking.client().search_runs([tracking.experiment_id()])) == 1


def test_secrets_in_the_environment_never_reach_the_store(tmp_path, monkeypatch, workspace):
    secret = "hf_Zq8SECRETtokenVALUE42"
    password = "mlflow-pa55word-XYZ"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    run_dir = make_run(tmp_path, "run-s", logged=False)
    # A user pasted the token into the base URL: it is in the recipe and in run.json.
    recipe = (
        (run_dir / "recipe.yaml")
        .read_text()
        .replace("name: run-s", f"name: run-s\nmodel:\n  base: https://u:{secret}@hub/x")
    )
    (run_dir / "recipe.yaml").write_text(recipe)
    info = json.loads((run_dir / "run.json").read_text())
    info["base"]["ref"] = f"https://u:{secret}@hub/x"
    (run_dir / "run.json").write_text(json.dumps(info))
    rid = tracking.log_run(run_dir)
    run = tracking.client().get_run(rid)
    assert run.data.params["model.base"] == "https://u:***@hub/x"  # a plain value, not JSON
    assert run.data.tags["lamina.base.ref"] == "https://u:***@hub/x"
    store = workspace / "mlflow"
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in files)  # the artifacts are there, scrubbed
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data, p
        assert password.encode() not in data, p


def test_flatten_masks_secret_looking_keys():
    recipe = {
        "judge": {
            "api_key": "sk-live-123",
            "api_key_env": "JUDGE_KEY",
            "url": "http://x",
            "hf_token": "hf_x",
        },
        "train": {"lr": 0.1, "tokens_per_step": 4096},
        "eval": {"max_new_tokens": 48},
    }
    assert tracking.flatten(recipe) == {
        "judge.api_key": "***",
        "judge.api_key_env": "JUDGE_KEY",
        "judge.url": "http://x",
        "judge.hf_token": "***",
        "train.lr": "0.1",
        "train.tokens_per_step": "4096",
        "eval.max_new_tokens": "48",
    }


def test_unfinished_run_is_refused_and_nothing_is_logged(tmp_path):
    run_dir = make_run(tmp_path, "run-r", logged=False)
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(LaminaError, match=r"run.json: run is 'running', not completed"):
        tracking.log_run(run_dir)


def test_bad_metrics_line_is_named_and_nothing_is_logged(tmp_path):
    run_dir = make_run(tmp_path, "run-m", logged=False)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(LaminaError, match=r"metrics.jsonl:6: not valid JSON"):
        tracking.log_run(run_dir)
    assert tracking.client().search_runs([tracking.experiment_id()]) == []


def test_tracking_uri_default_and_override(monkeypatch, workspace):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LAMINA_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri() == "http://127.0.0.1:1"
    monkeypatch.setenv("LAMINA_TRACKING_URI", "http://127.0.0.1:2")
    assert tracking.tracking_uri() == "http://127.0.0.1:2"
