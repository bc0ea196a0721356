"""`lamina incident drill` killed at each named point (lamina.faults), legs included: the next
command on the model ends the drill with the alias where it began (rolling forward when the
roll-back happened), with exactly one audit entry per move and one for the drill."""

from __future__ import annotations

import pytest

from killpoints import entries, lamina_cli, lamina_main
from lamina.governance import audit
from lamina.registry import aliases, anchor, coverage
from lamina.registry.release import acting_as

slow = pytest.mark.slow
DRILL = ("incident", "drill", "tickets", "--alias", "staging")


@pytest.mark.parametrize("point, moved", [
    ("incident.drill.back", 1),  # rolled back, not forward yet
    pytest.param("incident.drill.intent", 0, marks=slow),
    pytest.param("rollback.applied", 1, marks=slow),  # inside the back leg: its own entry missing too
    pytest.param("promote.aliased", 2, marks=slow),  # inside the forward leg
    pytest.param("incident.drill.forward", 2, marks=slow),
    pytest.param("incident.drill.audited", 2, marks=slow),
])  # fmt: skip
def test_a_killed_drill_ends_where_it_began_with_one_entry_per_move(released, point, moved):
    v1, v2, v3 = released
    with acting_as("bob"):
        aliases.promote("tickets", v1, "staging", reason="drill setup")
        aliases.promote("tickets", v2, "staging", reason="drill setup")
    lamina_cli(*DRILL, user="dana", kill=point)
    assert aliases.current("tickets", "staging") == (v1 if moved == 1 else v2)
    code, out, _ = lamina_main("audit", "verify", user="dana")  # read-only: names the interrupted drill
    assert code == 1 and "operation incident.drill" in out
    # The next command on the model, a plain promote, finishes the drill first, then moves.
    code, _, err = lamina_main("promote", "tickets", str(v3), "--to", "staging", "--reason", "next", user="dana")
    assert code == 0, err
    staging = [(m["op"], m["to"]) for m in aliases.moves("tickets") if m["alias"] == "staging"]
    legs = [("rollback", v1), ("promote", v2)] if moved else []
    assert staging == [("promote", v1), ("promote", v2), *legs, ("promote", v3)]
    drill_reasons = [d["reason"] for d in entries("rollback") + entries("promote") if "drill:" in d["reason"]]
    assert len(drill_reasons) == (2 if moved else 0)  # one entry per move, never two
    drills = entries("incident.drill")
    assert [(d["from"], d["rolled_back_to"], d["restored"]) for d in drills] == ([(v2, v1, True)] if moved else [])
    assert coverage.check() == [] and anchor.check() == [] and audit.verify().ok
