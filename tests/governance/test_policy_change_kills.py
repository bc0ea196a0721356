"""The policy writes beside grant/enroll/revoke — the role `keys issue` adds to an old policy
(`policy.role`) and `lamina policy encrypt-at-rest` — killed at named points (lamina.faults):
the next command writes the missing entry or drops the change, exactly one entry each."""

from __future__ import annotations

import pytest

from killpoints import boundary, entries, lamina_cli, lamina_main
from lamina.governance import access, at_rest, audit
from lamina.registry import coverage

slow = pytest.mark.slow


def _policy_without_consumer() -> None:
    """A workspace from before the `consumer` role existed (re-signed by its admin)."""
    access.init_policy("admin")
    policy = access.load_policy()
    policy.roles = {k: v for k, v in policy.roles.items() if k != "consumer"}
    access.save_policy(policy, signer="admin")


@pytest.mark.parametrize("point, applied", boundary("policy.role"))
def test_killed_role_addition_is_recorded_once(monkeypatch, point, applied):
    monkeypatch.setenv("LAMINA_USER", "admin")
    _policy_without_consumer()
    lamina_cli("keys", "issue", "--user", "app", user="admin", kill=point)
    assert ("consumer" in access.load_policy().roles) == applied
    code, _, err = lamina_main("keys", "issue", "--user", "app", user="admin")  # settles, then goes on
    assert code == 0, err
    assert [d["role"] for d in entries("policy.role")] == ["consumer"]
    assert access.load_policy().users["app"] == ["consumer"] and len(entries("serve.key.issue")) == 1
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point, applied", boundary("policy.encrypt_at_rest"))
def test_killed_encryption_switch_is_recorded_once(monkeypatch, point, applied):
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    lamina_cli("policy", "encrypt-at-rest", "on", user="admin", kill=point)
    assert at_rest.enabled() == applied
    code, out, _ = lamina_main("audit", "verify", user="admin")  # read-only: names the gap
    assert code == 1 and "operation policy.encrypt_at_rest" in out
    code, out, err = lamina_main("policy", "encrypt-at-rest", "on", user="admin")  # the retry
    assert code == 0, err
    assert out.startswith(f"security.encrypt_at_rest: {'on' if applied else 'off'} -> on")
    assert [d["on"] for d in entries("policy.encrypt_at_rest")] == [True] and at_rest.enabled()
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point, applied", boundary("policy.sign"))
def test_killed_policy_sign_is_recorded_once_by_its_retry(monkeypatch, point, applied):
    import yaml

    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    path = access.policy_path()
    data = yaml.safe_load(path.read_text())
    data["four_eyes"] = ["production", "staging"]  # a reviewed hand edit, to be signed
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    lamina_cli("policy", "sign", user="admin", kill=point)
    code, _, err = lamina_main("policy", "sign", user="admin")  # the retry: signs, or finds it signed
    assert code == 0, err
    signs = entries("policy.sign")
    assert len(signs) == 1 and signs[0].get("settled", False) == (point == "policy.sign.applied")
    assert access.load_policy().four_eyes == ["production", "staging"]
    assert coverage.check() == [] and audit.verify().ok
