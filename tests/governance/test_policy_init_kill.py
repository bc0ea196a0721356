"""`lamina init` killed while it writes the policy (lamina.faults): the next command finishes
or drops the policy's creation with exactly one `policy.init` audit entry."""

from __future__ import annotations

import pytest

from killpoints import boundary, lamina_cli, lamina_main
from lamina.governance import access, audit


@pytest.mark.parametrize("point, applied", boundary("policy.init"))
def test_killed_policy_init_is_recorded_once_by_the_next_command(workspace, point, applied):
    lamina_cli("init", user="admin", kill=point)
    assert access.policy_path().exists() == applied
    code, out, _ = lamina_main("audit", "verify", user="vera")  # read-only: names the gap
    assert code == 1 and "operation policy.init" in out and "was interrupted" in out
    code, _, err = lamina_main("init", user="admin")  # the retry: finishes or drops, then goes on
    assert code == 0, err
    inits = [(e["user"], e["details"]["admin"]) for e in audit.entries() if e["action"] == "policy.init"]
    assert inits == [("admin", "admin")]
    assert access.load_policy().users == {"admin": ["admin"]}
    assert not list((workspace / "audit" / "intents").glob("*/*.json"))
    assert lamina_main("audit", "verify", user="vera")[0] == 0 and audit.verify().ok
