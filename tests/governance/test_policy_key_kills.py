"""`lamina policy grant` and `lamina keys init / rotate` killed at each named point
(lamina.faults): the next command of the kind completes or drops the change, with exactly
one audit entry per applied change."""

from __future__ import annotations

import pytest

from killpoints import boundary, entries, lamina_cli, lamina_main
from lamina.governance import access, audit, crypto
from lamina.registry import coverage, signing

slow = pytest.mark.slow


@pytest.mark.parametrize("point, applied", boundary("policy.grant"))
def test_killed_grant_is_completed_or_dropped_by_the_next_grant(point, applied):
    access.init_policy("admin")
    lamina_cli("policy", "grant", "bob", "approver", user="admin", kill=point)
    assert lamina_main("policy", "grant", "carol", "viewer", user="admin")[0] == 0
    users = access.load_policy().users
    assert users.get("bob") == (["approver"] if applied else None) and users["carol"] == ["viewer"]
    assert [(d["grantee"], d["role"]) for d in entries("policy.grant")] == (
        [("bob", "approver"), ("carol", "viewer")] if applied else [("carol", "viewer")]
    )
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point", [pytest.param("keys.rotate.intent", marks=slow), "keys.rotate.applied"])
def test_killed_key_rotation_is_recorded_once(point):
    access.init_policy("admin")
    first = crypto.load_master_key().key_id
    lamina_cli("keys", "rotate", user="admin", kill=point)
    assert lamina_main("keys", "rotate", user="admin")[0] == 0
    now = crypto.load_master_key().key_id
    chain = [(d["old"], d["new"]) for d in entries("keys.rotate")]
    if point == "keys.rotate.applied":  # two rotations happened; each has its entry, in order
        assert len(chain) == 2 and chain[0][0] == first and chain[0][1] == chain[1][0] and chain[1][1] == now
    else:
        assert chain == [(first, now)]
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.slow
def test_killed_signing_key_init_is_recorded_once():
    access.init_policy("admin")
    lamina_cli("keys", "init", user="admin", kill="keys.init.applied")
    made = signing.fingerprint()
    assert lamina_main("keys", "init", user="admin")[0] == 2  # exists now: refused, nothing new
    assert [d["fingerprint"] for d in entries("keys.init")] == [made]
