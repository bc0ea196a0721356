"""`lamina keys issue` and `lamina keys revoke` killed at each named point (lamina.faults):
an issued key and its audit entry land together — a key whose issue was not confirmed never
works and is taken back by the next keys command, which says so; a retry of a confirmed one
reports "already done" instead of issuing (or revoking) twice."""

from __future__ import annotations

import re

import pytest

from killpoints import entries, lamina_cli, lamina_main
from lamina.governance import access, audit
from lamina.registry import coverage
from lamina.serve import keys

slow = pytest.mark.slow
KEY = re.compile(r"lmn_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}")


def _works(key: str) -> bool:
    try:
        keys.KeyStore().authenticate(f"Bearer {key}")
        return True
    except keys.Denied:
        return False


@pytest.mark.parametrize("point, shown, confirmed", [
    ("serve.key.issue.stored", False, False),
    ("serve.key.issue.shown", True, False),
    ("serve.key.issue.applied", True, True),
    pytest.param("serve.key.issue.intent", False, False, marks=slow),
    pytest.param("serve.key.issue.audited", True, True, marks=slow),
])  # fmt: skip
def test_killed_issue_is_confirmed_once_or_taken_back_and_said(point, shown, confirmed):
    access.init_policy("admin")
    killed = lamina_cli("keys", "issue", "--user", "app", "--rate", "5/s", user="admin", kill=point)
    printed = KEY.findall(killed.stdout)
    assert len(printed) == int(shown)  # a printed secret reached stdout before the kill
    if shown:
        assert _works(printed[0]) == confirmed  # an unconfirmed key is refused even before settling
    code, out, err = lamina_main("keys", "issue", "--user", "app", "--rate", "5/s", user="admin")  # the retry
    assert code == 0, err
    stored = [r for r in keys._load()["keys"] if not r.get("pending")]
    if confirmed:
        assert out.startswith(f"already done: key {stored[0]['id']}") and not KEY.findall(out)
        assert len(stored) == 1 and _works(printed[0])
    else:
        taken_back = point in ("serve.key.issue.stored", "serve.key.issue.shown")
        assert ("was removed and never works" in err) == taken_back
        (fresh,) = KEY.findall(out)
        assert len(stored) == 1 and _works(fresh) and not (printed and _works(printed[0]))
    assert [d["key"] for d in entries("serve.key.issue")] == [stored[0]["id"]]
    assert not keys._load()["keys"][0].get("pending") and len(keys._load()["keys"]) == 1
    assert not list((access.policy_path().parent / "audit" / "intents").glob("*/*.json"))
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point, applied", [
    ("serve.key.revoke.applied", True),
    pytest.param("serve.key.revoke.intent", False, marks=slow),
])  # fmt: skip
def test_killed_revoke_is_recorded_once_and_its_retry_says_already_done(point, applied):
    access.init_policy("admin")
    code, out, _ = lamina_main("keys", "issue", "--user", "app", user="admin")
    (key,) = KEY.findall(out)
    key_id = key.split("_")[1]
    lamina_cli("keys", "revoke", key_id, user="admin", kill=point)
    assert _works(key) != applied
    code, out, err = lamina_main("keys", "revoke", key_id, user="admin")
    assert code == 0, err
    assert out.startswith("already done: revoked" if applied else "revoked") and not _works(key)
    assert [d["key"] for d in entries("serve.key.revoke")] == [key_id]
    assert lamina_main("keys", "revoke", key_id, user="admin")[2].count("already revoked") == 1  # once only
    assert coverage.check() == [] and audit.verify().ok


def test_audit_verify_names_a_key_no_entry_accounts_for(workspace):
    access.init_policy("admin")
    code, out, _ = lamina_main("keys", "issue", "--user", "app", user="admin")
    (key,) = KEY.findall(out)
    assert coverage.check() == []
    data = keys._load()
    forged = {**data["keys"][0], "id": "abcdef012345", "user": "intruder"}  # written by hand, not issued
    data["keys"][0]["revoked"] = "2026-12-01T00:00:00+00:00"  # revoked by hand, no entry
    keys.write_json(keys.store_path(), {"keys": [*data["keys"], forged]})
    code, out, _ = lamina_main("audit", "verify", user="admin")
    assert code == 1 and "API key abcdef012345 (intruder) has no serve.key.issue audit entry" in out
    assert f"API key {key.split('_')[1]} was revoked without a serve.key.revoke audit entry" in out
