"""Killing register or promote mid-way (SIGKILL at each step boundary) leaves no half-made
version and the alias where it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.errors import LaminaError
from lamina.registry import aliases, resolve, tracking, versions


def _run_killed(code: str, crash_at: str, user: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAMINA_CRASH_AT": crash_at, "LAMINA_USER": user}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc


@pytest.mark.parametrize("point", ["register.copied", "register.signed"])
def test_register_killed_leaves_no_version(runs, point):
    run_a, _ = runs
    _run_killed(
        f"from lamina.registry import versions; versions.register({str(run_a)!r}, 'tickets')", point, "alice"
    )
    c = tracking.client()
    assert [
        mv for rm in c.search_registered_models() for mv in c.search_model_versions(f"name = '{rm.name}'")
    ] == []
    with pytest.raises(LaminaError):
        resolve("tickets/1")
    # What is left is a directory nothing points at; the next register sweeps it away.
    left = [p.name for p in (versions.registry_root() / "tickets").iterdir() if p.is_dir()]
    assert len(left) == 1
    again = versions.register(run_a, "tickets")
    assert again["version"] == 1 and resolve("tickets/1") == Path(again["path"])
    assert [p.name for p in (versions.registry_root() / "tickets").iterdir() if p.is_dir()] == [
        Path(again["path"]).name
    ]


def test_promote_killed_before_alias_moves_leaves_alias_and_history(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    versions.register(runs[1], "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production")
    code = "from lamina.registry import aliases; aliases.promote('tickets', 2, 'production')"
    _run_killed(code, "promote.pending", "bob")
    assert aliases.current("tickets", "production") == 1
    assert [(m["op"], m["to"]) for m in aliases.moves("tickets")] == [("promote", 1)]
    # and the pending record does not confuse a later promote or rollback
    aliases.promote("tickets", 2, "production")
    monkeypatch.setenv("LAMINA_USER", "dana")
    assert aliases.rollback("tickets", "production", reason="test")["to"] == 1


def test_promote_killed_after_alias_moved_is_settled_as_done(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    code = "from lamina.registry import aliases; aliases.promote('tickets', 1, 'production')"
    _run_killed(code, "promote.aliased", "bob")
    assert aliases.current("tickets", "production") == 1
    moves = aliases.moves("tickets")
    assert [(m["op"], m["to"], m["state"], m.get("settled")) for m in moves] == [("promote", 1, "done", True)]


@pytest.mark.slow  # two cold interpreters importing MLflow and model-signing: ~15 s on a busy machine
def test_concurrent_registers_get_distinct_versions_and_one_audit_chain(runs):
    from lamina.governance import audit

    code = "import sys; from lamina.registry import versions; versions.register(sys.argv[1], 'tickets')"
    env = {**os.environ, "LAMINA_USER": "alice"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(r)], env=env, stderr=subprocess.PIPE) for r in runs
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    c = tracking.client()
    found = {mv.tags["lamina.run_id"]: int(mv.version) for mv in c.search_model_versions("name = 'tickets'")}
    assert sorted(found.values()) == [1, 2] and set(found) == {"run-a", "run-b"}
    for v in (1, 2):
        resolve(f"tickets/{v}")
    assert audit.verify().ok
