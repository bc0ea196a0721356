"""`lamina data intake` killed after its change, then the same command again (what the kill
campaign, bench/kill_campaign.py, does): the retry says "already done" instead of taking the
records in a second time, and there is exactly one `data.intake` audit entry."""

from __future__ import annotations

import pytest
from intake_fixtures import tickets, write_jsonl

from killpoints import ADD, entries, lamina_cli, lamina_main
from lamina.governance import access, audit
from lamina.registry import coverage


@pytest.mark.parametrize("point", ["data.intake.applied", pytest.param("data.intake.audited", marks=pytest.mark.slow)])
def test_killed_intake_retried_is_done_once(tmp_path, point):
    access.init_policy("alice")
    f = write_jsonl(tmp_path / "a.jsonl", tickets(24))
    assert lamina_main("data", "add", str(f), "--name", "a", *ADD)[0] == 0
    lamina_cli("data", "intake", "a", "--name", "support", kill=point)
    code, out, err = lamina_main("data", "intake", "a", "--name", "support")
    assert code == 0, err
    assert out.startswith("already done (finished after an interruption): dataset support version "), out
    assert len(entries("data.intake")) == 1
    assert coverage.check() == [] and audit.verify().ok
    # Typed again after it finished, it is a new intake of records taken in before: recorded again.
    code, out, _ = lamina_main("data", "intake", "a", "--name", "support")
    assert code == 0 and "taken in before" in out and len(entries("data.intake")) == 2
