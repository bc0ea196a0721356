"""Rollout fixtures: a migrated MLflow store per test, a policy (alice trains, bob approves,
dana deploys, olivia owns `tickets` with disclosure triggers), three registered versions with
v1 at production, a live-event writer, a loopback webhook receiver, and the CLI in process."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lamina import workspace as lamina_workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from registry_runs import make_run  # noqa: E402

INCIDENT_POLICY = {
    "tickets": {
        "owner": "olivia",
        "escalation": ["cto@example.com"],
        "disclosure": [
            {"signal": "pii_in_outputs", "notify": ["dpo@example.com", "acme-customer"], "within_hours": 72},
            {"signal": "withdrawal_reached_served", "notify": ["dpo@example.com"], "within_hours": 720},
        ],
    }
}


@pytest.fixture(scope="session")
def _released_template(_pristine_store, tmp_path_factory):
    """A workspace with the policy, a signing key and `tickets` 1..3 registered, v1 at
    production — built once; each test gets a copy (registering costs seconds)."""
    from lamina import workspace
    from lamina.governance import access, identity
    from lamina.registry import aliases, signing, versions
    from lamina.registry.release import acting_as

    home = tmp_path_factory.mktemp("released") / "lamina-home"
    (home / "mlflow").mkdir(parents=True)
    shutil.copy(_pristine_store, home / "mlflow" / "mlflow.db")
    saved = {k: os.environ.get(k) for k in ("LAMINA_HOME", "LAMINA_USER", "LAMINA_CONFIG_DIR")}
    os.environ.update(
        LAMINA_HOME=str(home), LAMINA_USER="admin", LAMINA_CONFIG_DIR=str(home.parent / "config")
    )
    try:
        access.init_policy("admin")
        for user, role in (
            ("alice", "trainer"),
            ("bob", "approver"),
            ("dana", "deployer"),
            ("vera", "viewer"),
        ):
            identity.create_key(user)  # as each person does with `lamina keys user-init`
            access.grant(user, role)
        policy = yaml.safe_load(access.policy_path().read_text())
        policy["incidents"] = INCIDENT_POLICY
        access.policy_path().write_text(yaml.safe_dump(policy, sort_keys=False))
        access.sign_policy()  # the admin's reviewed hand edit, as `lamina policy sign`
        signing.init_keys()
        with acting_as("alice"):
            numbers = [
                versions.register(make_run(home.parent / "runs", f"run-{s}", seed=s), "tickets")["version"]
                for s in range(3)
            ]
        with acting_as("bob"):
            aliases.promote("tickets", numbers[0], "production", reason="first release")
        secrets = workspace.secrets_dir()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return home, secrets, numbers


def _move_store(db: Path, old: str, new: str) -> None:
    """Point every path the MLflow store holds into the template at the copy instead."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in column[2].upper() or "TEXT" in column[2].upper():
                    con.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = REPLACE("{column[1]}", ?, ?) '
                        f'WHERE "{column[1]}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )
        con.commit()
    finally:
        con.close()


@pytest.fixture
def released(workspace, _released_template, monkeypatch):
    """A copy of the released template as this test's workspace; acting as dana (deployer)."""
    template, secrets, numbers = _released_template
    shutil.copytree(template, workspace)
    # The keys live outside the workspace, one directory per workspace path: copy them to this one's.
    shutil.copytree(secrets, lamina_workspace.secrets_dir(), dirs_exist_ok=True)
    # and each person's personal key (alice, bob, dana... all on this one test machine)
    shutil.copytree(secrets.parent.parent / "identities", lamina_workspace.config_dir() / "identities",
                    dirs_exist_ok=True)
    _move_store(workspace / "mlflow" / "mlflow.db", str(template), str(workspace))
    monkeypatch.setenv("LAMINA_USER", "dana")
    return numbers


@pytest.fixture
def webhook():
    """A loopback receiver that keeps every JSON body POSTed to it; stopped afterwards."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def lamina(cli_factory):
    return cli_factory(user="dana")
