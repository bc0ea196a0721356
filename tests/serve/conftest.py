"""Serving fixtures: a migrated MLflow store per test, a policy (alice trains, bob approves,
admin issues keys), and registered LoRA versions on the tiny random base; a real uvicorn
server on a free loopback port, stopped by the fixture."""

from __future__ import annotations

import shutil

import pytest
from serve_runs import make_lora_run

from lamina.rundir import EVAL


@pytest.fixture(scope="session")
def lora_runs(tiny_random, tmp_path_factory):
    """Three LoRA runs (seeds 1, 2, 3) on the tiny random base, made once; copied per test."""
    root = tmp_path_factory.mktemp("lora-runs")
    return [make_lora_run(root, f"run-{s}", tiny_random, seed=s) for s in (1, 2, 3)]


@pytest.fixture
def registry(workspace, _pristine_store, monkeypatch, tmp_path, lora_runs):
    """Policy + signing key + the three runs registered as `tickets` 1..3, 1 at production."""
    from lamina.governance import access, identity
    from lamina.registry import aliases, signing, tracking, versions
    from lamina.registry.release import acting_as

    (workspace / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(_pristine_store, workspace / "mlflow" / "mlflow.db")
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    for user, role in (("alice", "trainer"), ("bob", "approver"), ("dana", "deployer")):
        identity.create_key(user)  # as each person does with `lamina keys user-init`
        access.grant(user, role)
    signing.init_keys()
    runs = []
    for run in lora_runs:
        shutil.copytree(run, tmp_path / "runs" / run.name)
        runs.append(tmp_path / "runs" / run.name)
    with acting_as("alice"):
        for r in runs:
            signing.sign_dir(r / EVAL)  # as `lamina eval` signs its verdict
            tracking.log_run(r)  # as the trainer does when a run finishes
        numbers = [versions.register(r, "tickets")["version"] for r in runs]
    with acting_as("bob"):
        aliases.promote("tickets", numbers[0], "production", reason="first")
    return numbers
