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
def _pristine_store(tmp_path_factory):
    """An empty, migrated MLflow sqlite store, made once: creating one costs seconds."""
    from lamina.registry import tracking

    home = tmp_path_factory.mktemp("mlflow-template")
    previous = os.environ.get("LAMINA_HOME")
    os.environ["LAMINA_HOME"] = str(home)
    try:
        tracking.client().search_experiments()
    finally:
        if previous is None:
            os.environ.pop("LAMINA_HOME", None)
        else:
            os.environ["LAMINA_HOME"] = previous
    return home / "mlflow" / "mlflow.db"


@pytest.fixture
def released(workspace, _pristine_store, monkeypatch, tmp_path):
    """`tickets` versions 1..3 (trained by alice), v1 at production; returns the version numbers."""
    from lamina.governance import access
    from lamina.registry import aliases, signing, versions
    from lamina.registry.release import acting_as

    (workspace / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(_pristine_store, workspace / "mlflow" / "mlflow.db")
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    for user, role in (("alice", "trainer"), ("bob", "approver"), ("dana", "deployer"), ("vera", "viewer")):
        access.grant(user, role)
    policy = yaml.safe_load(access.policy_path().read_text())
    policy["incidents"] = INCIDENT_POLICY
    access.policy_path().write_text(yaml.safe_dump(policy, sort_keys=False))
    signing.init_keys()
    with acting_as("alice"):
        numbers = [
            versions.register(make_run(tmp_path / "runs", f"run-{s}", seed=s), "tickets")["version"]
            for s in range(3)
        ]
    with acting_as("bob"):
        aliases.promote("tickets", numbers[0], "production", reason="first release")
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
def lamina(monkeypatch, capsys):
    """Run the CLI in process as `user`: (exit code, stdout, stderr)."""
    from lamina.cli import main

    def call(*args: str, user: str = "dana") -> tuple[int, str, str]:
        monkeypatch.setenv("LAMINA_USER", user)
        monkeypatch.setattr(sys, "argv", ["lamina", *args])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call
