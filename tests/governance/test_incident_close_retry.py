"""A retried `lamina incident close` after a kill says "already done" — the same person with
the same retrospective repeats the close that was interrupted — while anyone else, or a close
that finished and reported, is still told the incident is already closed."""

from __future__ import annotations

import pytest

from killpoints import entries, lamina_cli, lamina_main
from lamina.governance import access, audit

OPEN = ("incident", "open", "tickets", "--severity", "low", "--summary", "answers leak order numbers")


@pytest.mark.parametrize("point", ["incident.close.applied", pytest.param("incident.close.audited",
                                                                          marks=pytest.mark.slow)])
def test_a_retried_close_after_a_kill_is_already_done_once_recorded(workspace, tmp_path, point):
    access.init_policy("admin")
    assert lamina_main(*OPEN, user="admin")[0] == 0
    retro = tmp_path / "retro.md"
    retro.write_text("Root cause: a template change. Fixed by retraining.\n")
    close = ("incident", "close", "1", "--retrospective", str(retro))
    lamina_cli(*close, user="admin", kill=point)
    code, out, err = lamina_main(*close, user="admin")
    assert code == 0, err
    assert out.startswith("already done: ")
    assert [d["incident"] for d in entries("incident.close")] == [1]
    other = tmp_path / "other.md"
    other.write_text("A different account.\n")
    code, _, err = lamina_main("incident", "close", "1", "--retrospective", str(other), user="admin")
    assert code == 2 and "already closed" in err  # another retrospective is another close
    assert len(entries("incident.close")) == 1 and audit.verify().ok


def test_a_second_close_of_a_reported_close_is_still_refused(workspace, tmp_path):
    access.init_policy("admin")
    assert lamina_main(*OPEN, user="admin")[0] == 0
    retro = tmp_path / "retro.md"
    retro.write_text("Root cause: a template change.\n")
    close = ("incident", "close", "1", "--retrospective", str(retro))
    assert lamina_main(*close, user="admin")[0] == 0
    code, _, err = lamina_main(*close, user="admin")
    assert code == 2 and "already closed" in err and len(entries("incident.close")) == 1
