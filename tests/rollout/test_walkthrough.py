"""Slow: the README's rollout walk-through, command for command, on the demo's models — `lamina
demo`, the incident policy, `lamina serve` on loopback, a 10 % canary of v2 with a ratings
guard, `examples/replay.py` rating answers through the official openai client, the server's own
rollback, the incident, the freeze, the retrospective and `audit verify`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY = {
    "support-tickets": {
        "owner": "walker",
        "escalation": ["cto@example.com"],
        "disclosure": [{"signal": "guard_breach", "notify": ["acme-customer"], "within_hours": 24}],
    }
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_readme_walkthrough_canary_rollback_incident_retrospective(tmp_path):
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / ".lamina"), "LAMINA_USER": "walker",
           "PYTHONPATH": str(ROOT / "src")}

    def lamina(*args, user=None, check=True):
        proc = subprocess.run([sys.executable, "-m", "lamina.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900, env={**env, **({"LAMINA_USER": user} if user else {})})
        assert not check or proc.returncode == 0, proc.stderr[-3000:]
        return proc

    lamina("demo")
    policy_path = tmp_path / ".lamina" / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    policy["incidents"] = POLICY
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    lamina("policy", "sign")  # the admin's reviewed edit
    key = json.loads(lamina("keys", "issue", "--user", "replay", "--json").stdout)["key"]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "lamina.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None and time.time() < deadline, "the server did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        lamina("rollout", "start", "support-tickets", "2", "--alias", "production", "--canary", "10",
               "--min-requests", "20", "--window", "600", "--guard", "live.error_rate <= champion + 0.02",
               "--guard", "live.feedback_score >= champion - 0.02", "--reason", "v2 (DPO) on a tenth",
               user="demo-approver")
        time.sleep(3)  # the server's next poll loads v2 beside v1
        replay = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "replay.py"), ".lamina/demo/tickets-eval.jsonl", "--model",
             "support-tickets@production", "--url", f"http://127.0.0.1:{port}/v1"],
            cwd=tmp_path, env={**env, "KEY": key}, capture_output=True, text=True, timeout=900)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert replay.returncode == 0 and "failed requests: 0" in replay.stdout, replay.stdout + replay.stderr
    answers = {line.split(":")[0]: int(line.split()[1]) for line in replay.stdout.splitlines()
               if line.startswith("support-tickets/")}
    # v2 answered its callers until its ratings fell below v1's, then v1 answered everyone.
    assert answers["support-tickets/1"] + answers["support-tickets/2"] == 1000
    assert 20 <= answers["support-tickets/2"] < 100
    assert 'lamina_rollout_actions_total{action="rolled_back",ref="support-tickets@production"} 1.0' in metrics
    assert 'lamina_prompt_drift{version="support-tickets/1"}' in metrics

    status = lamina("rollout", "status", "support-tickets", "--json")
    state = json.loads(status.stdout)
    assert "rolled_back" in json.dumps(state) and "live.feedback_score >= champion - 0.02" in json.dumps(state)
    (incident,) = json.loads(lamina("incident", "list", "--json").stdout)
    assert incident["source"] == "guard_breach" and incident["versions"] == [2] and incident["owner"] == "walker"
    refused = lamina("promote", "support-tickets", "2", "--to", "production", user="demo-approver", check=False)
    assert refused.returncode == 2 and "frozen while incident 1 is open" in refused.stderr
    (tmp_path / "retro.md").write_text("# Retrospective\nv2 matched fewer triages than v1 on replayed tickets.\n")
    early = lamina("incident", "close", "1", "--retrospective", "retro.md", check=False)
    assert early.returncode == 2 and "'acme-customer' has not been recorded as told" in early.stderr
    lamina("incident", "notified", "1", "acme-customer")
    closed = json.loads(lamina("incident", "close", "1", "--retrospective", "retro.md", "--json").stdout)
    assert closed["state"] == "closed"
    assert "audit log intact" in lamina("audit", "verify").stdout
