"""Registry test fixtures: a pre-migrated MLflow store per test, a policy with one person per
role, a signing key, and two passing runs."""

from __future__ import annotations

import pytest
from registry_runs import make_run


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Two passing runs by alice; the workspace policy: alice trainer, bob approver, root admin."""
    monkeypatch.setenv("LAMINA_USER", "admin")
    from lamina.governance import access, identity
    from lamina.registry import signing

    access.init_policy("admin")
    for user, role in (("alice", "trainer"), ("bob", "approver"), ("dana", "deployer"), ("vera", "viewer")):
        identity.create_key(user)  # as each person does with `lamina keys user-init`
        access.grant(user, role)
    signing.init_keys()
    monkeypatch.setenv("LAMINA_USER", "alice")
    return make_run(tmp_path / "runs", "run-a", seed=0), make_run(tmp_path / "runs", "run-b", seed=1)


@pytest.fixture
def three_releases(runs, tmp_path, monkeypatch):
    """tickets/1, 2, 3 promoted to production in turn (by bob)."""
    from lamina.registry import aliases, versions

    run_c = make_run(tmp_path / "runs", "run-c", seed=2)
    for run in (*runs, run_c):
        versions.register(run, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    for v in (1, 2, 3):
        aliases.promote("tickets", v, "production")


@pytest.fixture(autouse=True)
def _store(_pristine_store, workspace):
    import shutil

    (workspace / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(_pristine_store, workspace / "mlflow" / "mlflow.db")
