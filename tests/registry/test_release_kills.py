"""`lamina register / promote / rollback` killed at each named point (lamina.faults), then the
same command again: the change is made exactly once, the retry says "already done", and
there is exactly one audit entry (with its anchor) per applied change."""

from __future__ import annotations

import json

import pytest

from killpoints import entries, lamina_cli, lamina_main
from lamina.governance import audit
from lamina.registry import aliases, anchor, coverage, tracking, versions

slow = pytest.mark.slow


def _clean() -> None:
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point, applied", [
    ("register.applied", True),
    pytest.param("register.intent", False, marks=slow),
    pytest.param("register.signed", False, marks=slow),
    pytest.param("register.audited", True, marks=slow),
])  # fmt: skip
def test_killed_register_then_retry_registers_once(runs, point, applied):
    run_a, _ = runs
    lamina_cli("register", str(run_a), "--name", "tickets", kill=point)
    code, out, err = lamina_main("register", str(run_a), "--name", "tickets")
    assert code == 0, err
    assert out.startswith("already done: registered tickets/1" if applied else "registered tickets/1")
    assert [int(mv.version) for mv in versions.all_versions("tickets")] == [1]
    assert [(d["name"], d["version"]) for d in entries("register")] == [("tickets", 1)]
    assert [p.name for p in (versions.registry_root() / "tickets").iterdir() if p.is_dir()] == [
        versions.local_dir(versions.get_version("tickets", 1)).name
    ]
    _clean()


@pytest.mark.parametrize("point", [
    pytest.param("promote.intent", marks=slow),
    pytest.param("promote.pending", marks=slow),
    "promote.aliased",
    pytest.param("promote.audited", marks=slow),
])  # fmt: skip
def test_killed_promote_then_retry_moves_once(runs, point):
    versions.register(runs[0], "tickets")
    lamina_cli("promote", "tickets", "1", "--to", "production", user="bob", kill=point)
    code, out, err = lamina_main("promote", "tickets", "1", "--to", "production", user="bob")
    assert code == 0, err
    assert out.startswith("already done: " if point in ("promote.aliased", "promote.audited") else "tickets")
    assert aliases.current("tickets", "production") == 1
    assert [(m["op"], m["to"]) for m in aliases.moves("tickets")] == [("promote", 1)]
    assert [(d["alias"], d["version"]) for d in entries("promote")] == [("production", 1)]
    _clean()


@pytest.mark.parametrize("point, applied", [
    pytest.param("rollback.intent", False, marks=slow),
    pytest.param("rollback.pending", False, marks=slow),
    pytest.param("rollback.aliased", True, marks=slow),
    ("rollback.applied", True),
    pytest.param("rollback.audited", True, marks=slow),
])  # fmt: skip
def test_killed_rollback_then_retry_never_rolls_back_twice(three_releases, point, applied):
    args = ("rollback", "tickets", "--reason", "v3 answers in the wrong format")
    lamina_cli(*args, user="dana", kill=point)
    code, out, err = lamina_main(*args, user="dana")
    assert code == 0, err
    assert out.startswith("already done: " if applied else "tickets@production: 3 -> 2")
    assert aliases.current("tickets", "production") == 2  # once: not back to 1
    assert [(d["previous"], d["version"]) for d in entries("rollback")] == [(3, 2)]
    _clean()


@slow
def test_rollback_with_an_operation_id_is_done_once_even_after_it_completed(three_releases):
    args = ("rollback", "tickets", "--reason", "bad release", "--op-id", "incident-42")
    assert lamina_main(*args, user="dana")[1].startswith("tickets@production: 3 -> 2")
    code, out, err = lamina_main(*args, user="dana")
    assert code == 0 and out.startswith("already done: tickets@production: 3 -> 2")
    assert aliases.current("tickets", "production") == 2 and len(entries("rollback")) == 1


@slow
def test_history_keeps_an_applied_move_interrupted_before_it_was_marked_done(runs, monkeypatch, workspace):
    for run in runs:
        versions.register(run, "tickets")
    lamina_cli("promote", "tickets", "1", "--to", "production", user="bob", kill="promote.aliased")
    # As if the journal that would settle it were another machine's: only the tag is left.
    for intent in (workspace / "audit" / "intents").glob("*/*.json"):
        intent.unlink()
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 2, "production")
    moves = [(m["op"], m["from"], m["to"]) for m in aliases.moves("tickets")]
    assert moves == [("promote", None, 1), ("promote", 1, 2)]
    assert [(e["op"], e.get("to")) for e in aliases.history("tickets")][-2:] == [("promote", 1), ("promote", 2)]


def test_audit_verify_names_state_without_an_entry(runs, monkeypatch):
    from tests.data.intake.intake_fixtures import info, tickets, write_jsonl

    from lamina.data.intake.sources import add_source

    versions.register(runs[0], "tickets")
    # Changes made around Lamina: an alias set with MLflow's own client, a source written
    # straight into the catalog. Neither has an audit entry.
    tracking.client().set_registered_model_alias("tickets", "production", "1")
    add_source(write_jsonl(runs[0].parent / "t.jsonl", tickets(5)), info("side-door"))
    monkeypatch.setenv("LAMINA_USER", "vera")
    code, out, err = lamina_main("audit", "verify", "--json", user="vera")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert "model tickets: alias production points at version 1 but Lamina never moved it" in problems
    assert "data source 'side-door' has no data.add audit entry" in problems
