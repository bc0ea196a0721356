"""Rollout commands killed at their audit boundary (lamina.faults): the next rollout command
on the model writes the missing entry (and its anchor) once, then does its own change."""

from __future__ import annotations

import pytest

from killpoints import boundary, entries, lamina_cli
from lamina.governance import audit
from lamina.registry import anchor, coverage
from lamina.rollout import record


@pytest.mark.parametrize("point, applied", boundary("rollout.start"))
def test_a_killed_rollout_start_is_recorded_once_by_the_next_rollout_command(released, lamina, point, applied):
    _, v2, _ = released
    start = ("rollout", "start", "tickets", str(v2), "--alias", "production", "--canary", "10", "--reason", "try")
    lamina_cli(*start, user="bob", kill=point)
    assert (record.active("tickets", "production") is not None) == applied
    nxt = ("rollout", "step", "tickets", "--to", "50", "--alias", "production") if applied else start
    code, _, err = lamina(*nxt, user="bob")
    assert code == 0, err
    assert [(d["challenger"], d["share"]) for d in entries("rollout.start")] == [(v2, 10.0)]
    assert [d["share"] for d in entries("rollout.step")] == ([50.0] if applied else [])
    assert record.active("tickets", "production")["share"] == (50.0 if applied else 10.0)
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok


@pytest.mark.slow
def test_a_killed_abort_is_recorded_once_and_the_next_start_goes_ahead(released, lamina):
    _, v2, v3 = released
    assert lamina("rollout", "start", "tickets", str(v2), "--alias", "production", "--canary", "10",
                  user="bob")[0] == 0
    lamina_cli("rollout", "abort", "tickets", "--alias", "production", "--reason", "errors up", user="dana",
               kill="rollout.abort.applied")
    assert record.active("tickets", "production") is None  # the abort took effect; its entry is missing
    code, _, err = lamina("rollout", "start", "tickets", str(v3), "--alias", "production", "--canary", "5",
                          user="bob")
    assert code == 0, err
    (aborted,) = entries("rollout.abort")
    assert (aborted["challenger"], aborted["reason"], aborted["settled"]) == (v2, "errors up", True)
    assert [d["challenger"] for d in entries("rollout.start")] == [v2, v3]
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok
