"""Retries that must not act twice, whoever settled the interrupted command first: a rollback
killed after it moved the alias, settled by someone else's promote, then retried, reports
"already done" — once; `lamina track` killed before its audit entry is recorded once."""

from __future__ import annotations

import pytest
from registry_runs import make_run

from killpoints import boundary, entries, lamina_cli, lamina_main
from lamina.governance import audit
from lamina.registry import aliases, anchor, coverage, tracking


@pytest.mark.parametrize("point", ["rollback.applied", pytest.param("rollback.aliased", marks=pytest.mark.slow)])
def test_a_rollback_retried_after_another_command_settled_it_is_not_done_twice(three_releases, point):
    args = ("rollback", "tickets", "--reason", "v3 answers in the wrong format")
    lamina_cli(*args, user="dana", kill=point)
    # Someone else's command on the model comes first and settles the interrupted rollback.
    code, _, err = lamina_main("promote", "tickets", "1", "--to", "staging", user="bob")
    assert code == 0, err
    assert len(entries("rollback")) == 1
    code, out, err = lamina_main(*args, user="dana")
    assert code == 0 and out.startswith("already done: tickets@production: 3 -> 2"), (out, err)
    assert aliases.current("tickets", "production") == 2  # not back to 1
    assert [(d["previous"], d["version"]) for d in entries("rollback")] == [(3, 2)]
    # Told once, the same command again is a new rollback: one release further back.
    code, out, err = lamina_main(*args, user="dana")
    assert code == 0 and out.startswith("tickets@production: 2 -> 1"), (out, err)
    assert [(d["previous"], d["version"]) for d in entries("rollback")] == [(3, 2), (2, 1)]
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok


def test_another_users_identical_rollback_is_not_taken_for_the_retry(three_releases, monkeypatch):
    from lamina.governance import access, identity

    monkeypatch.setenv("LAMINA_USER", "admin")
    identity.create_key("erin")  # as erin does with `lamina keys user-init`
    access.grant("erin", "deployer")
    args = ("rollback", "tickets", "--reason", "bad release")
    lamina_cli(*args, user="dana", kill="rollback.applied")
    assert lamina_main("promote", "tickets", "1", "--to", "staging", user="bob")[0] == 0
    code, out, err = lamina_main(*args, user="erin")
    assert code == 0 and out.startswith("tickets@production: 2 -> 1"), (out, err)


@pytest.mark.parametrize("point, applied", boundary("track"))
def test_killed_track_is_recorded_once_by_the_retry(runs, tmp_path, point, applied):
    run = make_run(tmp_path / "more", "run-t", seed=3, logged=False)
    lamina_cli("track", str(run), kill=point)
    assert (tracking.find_run("run-t") is not None) == applied
    code, out, err = lamina_main("track", str(run))
    assert code == 0, err
    rid = tracking.find_run("run-t")
    assert out.startswith(f"logged {run} as MLflow run {rid}")
    assert [(d["run"], d["mlflow_run_id"]) for d in entries("track")].count(("run-t", rid)) == 1
    assert [d["run"] for d in entries("track")].count("run-t") == 1
    # Tracked again: already logged, nothing changes and nothing more is recorded.
    assert lamina_main("track", str(run))[0] == 0 and len([d for d in entries("track") if d["run"] == "run-t"]) == 1
    assert audit.verify().ok
