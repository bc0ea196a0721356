"""`lamina incident open / close` killed at their audit boundary (lamina.faults): the next
incident command writes the missing entry once, and a retried opening is the incident the
killed one opened, not a second."""

from __future__ import annotations

import pytest

from killpoints import boundary, entries, lamina_cli, lamina_main
from lamina.governance import access, audit, incidents

OPEN = ("incident", "open", "tickets", "--severity", "low", "--summary", "answers leak order numbers")


@pytest.mark.parametrize("point, applied", boundary("incident.open"))
def test_a_killed_opening_retried_opens_one_incident_with_one_entry(workspace, point, applied):
    access.init_policy("admin")
    lamina_cli(*OPEN, user="admin", kill=point)
    assert [r["id"] for r in incidents.all_incidents()] == ([1] if applied else [])
    code, out, err = lamina_main(*OPEN, user="admin")
    assert code == 0, err
    assert out.startswith("already done: incident 1" if applied else "incident 1")
    assert [r["id"] for r in incidents.all_incidents()] == [1]
    assert [(d["incident"], d["name"]) for d in entries("incident.open")] == [(1, "tickets")]
    assert not list((workspace / "audit" / "intents").glob("*/*.json")) and audit.verify().ok


def test_a_killed_close_is_recorded_once_by_the_next_incident_command(workspace, tmp_path):
    access.init_policy("admin")
    assert lamina_main(*OPEN, user="admin")[0] == 0
    retro = tmp_path / "retro.md"
    retro.write_text("Root cause: a template change. Fixed by retraining.\n")
    lamina_cli("incident", "close", "1", "--retrospective", str(retro), user="admin", kill="incident.close.applied")
    assert incidents.get(1)["state"] == "closed" and entries("incident.close") == []
    assert lamina_main("incident", "open", "other", "--severity", "low", "--summary", "s", user="admin")[0] == 0
    (closed,) = entries("incident.close")
    assert closed["incident"] == 1 and closed["settled"] is True
    assert closed["retrospective_sha256"] == incidents.get(1)["retrospective"]["sha256"]
    assert len(entries("incident.open")) == 2 and audit.verify().ok
