"""The policy is trusted only as an admin signed it: hand edits, unsigned files, files signed
by a non-admin or by a key this machine never trusted are refused, naming the file."""

from __future__ import annotations

import json

import pytest
import yaml

from lamina.errors import LaminaError
from lamina.governance import access, audit, identity, policy_trust


@pytest.fixture
def policy(monkeypatch):
    """admin (key made by init), tess a trainer with an enrolled key."""
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    identity.create_key("tess")
    access.grant("tess", "trainer")
    return access.policy_path()


def _edit(path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _denied() -> list[dict]:
    return [e for e in audit.entries() if e["action"] == "denied"]


def test_grant_re_signs_as_the_acting_admin_and_enrolls_the_grantees_key(policy):
    loaded = access.load_policy()
    assert loaded.signature.signer == "admin"
    assert loaded.users["tess"] == ["trainer"]
    assert loaded.keys["tess"] == [identity.own_public("tess")]
    assert policy_trust.pinned() == {identity.key_id(loaded.keys["admin"][0])}
    grant = [e for e in audit.entries() if e["action"] == "policy.grant"][-1]
    assert grant["details"]["key"] == identity.key_id(loaded.keys["tess"][0])


def test_a_role_escalated_by_hand_is_refused_and_the_refusal_audited(policy, monkeypatch):
    _edit(policy, lambda d: d["users"].update(tess=["admin"]))
    monkeypatch.setenv("LAMINA_USER", "tess")
    with pytest.raises(LaminaError, match=r"policy.yaml: changed after 'admin' signed it"):
        access.require("promote.production")
    assert [e["details"]["kind"] for e in _denied()] == ["signature"]


def test_an_unsigned_policy_is_refused(policy):
    _edit(policy, lambda d: d.pop("signature"))
    with pytest.raises(LaminaError, match=r"policy.yaml: the policy is not signed"):
        access.load_policy()


def test_a_policy_signed_by_a_non_admin_is_refused(policy, monkeypatch):
    """tess signs an escalation with her own (enrolled) key: she is not a trusted admin."""
    monkeypatch.setenv("LAMINA_USER", "tess")
    spec = access.load_policy()
    # Signed as she is (a trainer): the signer is no admin in the file.
    body = spec.model_copy(update={"signature": None})
    sig = identity.sign("tess", policy_trust._message(body))
    forged = body.model_dump() | {"signature": {"signer": "tess", **sig}}
    policy.write_text(yaml.safe_dump(forged, sort_keys=False))
    with pytest.raises(LaminaError, match=r"policy.yaml: signed by 'tess', who is not an admin in it"):
        access.load_policy()
    # Made herself admin first, then signed: her key was never trusted as an admin key here.
    escalated = policy_trust.sign(body.model_copy(update={"users": {**spec.users, "tess": ["admin"]}}),
                                  "tess", str(policy))
    policy.write_text(yaml.safe_dump(escalated.model_dump(), sort_keys=False))
    with pytest.raises(LaminaError, match=r"policy.yaml: signed by 'tess' with key \w+, which this machine never "
                                          r"trusted as an admin key"):
        access.load_policy()
    with pytest.raises(LaminaError, match=r"not a trusted admin key"):
        access.sign_policy()  # `lamina policy sign` as tess: refused too


def test_a_whole_new_policy_from_someone_else_is_refused(policy, monkeypatch):
    """Mallory replaces the policy with her own, self-consistent and signed by her own key."""
    monkeypatch.setenv("LAMINA_USER", "mallory")
    public = identity.create_key("mallory")["public"]
    mine = access.PolicySpec(users={"mallory": ["admin"]}, keys={"mallory": [public]})
    policy.write_text(yaml.safe_dump(policy_trust.sign(mine, "mallory", "x").model_dump(), sort_keys=False))
    with pytest.raises(LaminaError, match=r"never trusted as an admin key"):
        access.require("read")
    policy.unlink()  # and deleting it does not make a new admin of whoever acts next
    with pytest.raises(LaminaError, match=r"policy.yaml: the policy is missing, but this workspace had one"):
        access.require("read")


def test_an_admin_re_signs_a_reviewed_hand_edit(policy):
    _edit(policy, lambda d: d.update(four_eyes=["production", "staging"]))
    with pytest.raises(LaminaError, match="changed after"):
        access.load_policy()
    assert access.sign_policy() == "admin"
    assert access.load_policy().four_eyes == ["production", "staging"]
    assert audit.entries()[-1]["action"] == "policy.sign" and "sig" in audit.entries()[-1]


def test_a_new_admin_granted_by_a_trusted_admin_can_sign(policy, monkeypatch):
    identity.create_key("dave")
    access.grant("dave", "admin")
    monkeypatch.setenv("LAMINA_USER", "dave")
    access.grant("vera", "viewer")
    assert access.load_policy().signature.signer == "dave"
    access.revoke("tess", "trainer")
    assert "tess" not in access.load_policy().users
    actions = [(e["action"], e["user"]) for e in audit.entries()][-3:]
    assert actions == [("policy.grant", "admin"), ("policy.grant", "dave"), ("policy.revoke", "dave")]


def test_enrolling_checks_the_request_and_the_key_id_told(policy, monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "bob")
    info = identity.create_key("bob")
    request = identity.requests_dir() / "bob.json"
    data = json.loads(request.read_text())
    other = identity.create_key("eve")["public"]
    request.write_text(json.dumps({**data, "public": other}))  # swapped for a key bob does not hold
    monkeypatch.setenv("LAMINA_USER", "admin")
    with pytest.raises(LaminaError, match=r"bob.json: not a valid key request"):
        access.enroll("bob")
    request.write_text(json.dumps(data))
    with pytest.raises(LaminaError, match=r"--key-id 0000: the request holds key"):
        access.enroll("bob", expect="0000")
    assert access.enroll("bob", expect=info["key_id"]) == info["key_id"]
    assert not request.exists()


def test_a_policy_from_before_signatures_is_adopted_by_its_admin(monkeypatch):
    """An old workspace's unsigned policy: refused until its admin makes a key and signs it."""
    monkeypatch.setenv("LAMINA_USER", "alice")
    access.policy_path().write_text("users: {alice: [admin], tess: [trainer]}\n")
    with pytest.raises(LaminaError, match=r"policy.yaml: the policy is not signed"):
        access.require("read")
    monkeypatch.setenv("LAMINA_USER", "tess")  # not its admin: cannot adopt it
    identity.create_key("tess")
    with pytest.raises(LaminaError, match=r"'tess' is not an admin in this policy"):
        access.sign_policy()
    monkeypatch.setenv("LAMINA_USER", "alice")
    identity.create_key("alice")
    assert access.sign_policy() == "alice"
    policy = access.load_policy()
    assert policy.keys == {"alice": [identity.own_public("alice")]} and policy.signature.signer == "alice"
    assert audit.entries()[-1]["details"]["adopted"] is True


def test_grant_with_the_key_id_told_refuses_a_request_holding_another_key(policy, monkeypatch):
    """Anyone who can write the workspace can leave a request named 'bob' for a key they hold:
    the id bob read to the admin is what tells them apart."""
    monkeypatch.setenv("LAMINA_USER", "bob")
    real = identity.create_key("bob")["key_id"]
    monkeypatch.setenv("LAMINA_USER", "mallory")
    identity.create_key("bob", force=True)  # mallory's "bob" key, in the same config here
    monkeypatch.setenv("LAMINA_USER", "admin")
    before = access.policy_path().read_bytes()
    with pytest.raises(LaminaError, match=rf"--key-id {real}: bob's waiting key request holds key \w+, not {real}"):
        access.grant("bob", "approver", expect=real)
    assert access.policy_path().read_bytes() == before
