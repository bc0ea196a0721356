"""The demo seam: one call runs the whole release story on a fresh workspace."""

from __future__ import annotations

import json

from registry_runs import make_run

from lamina.governance import access, audit
from lamina.registry import demo_release, resolve


def test_demo_release_on_a_fresh_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "demo-user")
    a = make_run(tmp_path, "run-a", user="demo-user")
    b = make_run(tmp_path, "run-b", user="demo-user", seed=1)
    result = demo_release(a, b, name="tickets")
    assert [v["version"] for v in result["versions"]] == [1, 2]
    assert result["production"] == 1
    ops = [(e["op"], e.get("user")) for e in result["history"]]
    assert ops == [
        ("register", "demo-user"),
        ("promote", "demo-approver"),
        ("register", "demo-user"),
        ("promote", "demo-approver"),
        ("rollback", "demo-user"),
    ]
    assert (
        "rollback  production: 2 -> 1 by demo-user (demo: roll back the second release)"
        in result["history_text"]
    )
    assert "run      run-a" in result["lineage_text"] and "aliases  production" in result["lineage_text"]
    policy = access.load_policy()
    assert policy.users == {"demo-user": ["admin"], "demo-approver": ["approver"]}
    assert resolve("tickets@production") == resolve("tickets/1") != resolve("tickets/2")
    verdict = audit.verify()
    assert verdict.ok
    actions = [e["action"] for e in map(json.loads, audit.log_path().read_text().splitlines())]
    # The runs were logged when they finished (make_run plays the trainer), before the release.
    assert actions == ["keys.init", "track", "track", "policy.init", "policy.grant", "register", "promote", "register",
                       "promote", "rollback"]  # fmt: skip
