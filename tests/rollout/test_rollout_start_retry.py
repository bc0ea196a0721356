"""A retried `lamina rollout start` after a kill says "already done" (the same person, version,
share and reason as the start that was interrupted) instead of "a rollout is active"; any other
start (another reason) is still refused while that rollout runs."""

from __future__ import annotations

import pytest

from killpoints import entries, lamina_cli
from lamina.governance import audit
from lamina.registry import anchor, coverage
from lamina.rollout import record


@pytest.mark.parametrize("point", ["rollout.start.applied", pytest.param("rollout.start.audited",
                                                                         marks=pytest.mark.slow)])
def test_a_retried_start_after_a_kill_is_already_done(released, lamina, point):
    _, v2, _ = released
    start = ("rollout", "start", "tickets", str(v2), "--alias", "production", "--canary", "10", "--reason", "try")
    lamina_cli(*start, user="bob", kill=point)
    rollout = record.active("tickets", "production")["id"]
    code, out, err = lamina(*start, user="bob")
    assert code == 0, err
    assert out.startswith("already done: ") and f"(rollout {rollout})" in out
    assert [(d["rollout"], d["share"]) for d in entries("rollout.start")] == [(rollout, 10.0)]
    code, _, err = lamina(*start[:-1], "other", user="bob")  # another reason: another start
    assert code == 2 and "is active" in err
    assert len(entries("rollout.start")) == 1
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok
