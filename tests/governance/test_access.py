"""Roles from the policy file: the acting identity is checked, refusals name the permission."""

from __future__ import annotations

import json

import pytest
import yaml

from lamina.errors import LaminaError
from lamina.governance import access, audit


def test_first_action_bootstraps_policy_with_acting_user_as_admin(monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "founder")
    assert not access.policy_path().exists()
    assert access.require("register") == "founder"
    policy = access.load_policy()
    assert policy.users == {"founder": ["admin"]}
    assert policy.four_eyes == ["production"]
    assert [json.loads(line)["action"] for line in audit.log_path().read_text().splitlines()] == [
        "policy.init"
    ]


def test_refusal_names_user_roles_and_permission(monkeypatch):
    access.init_policy("admin")
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.grant("tess", "trainer")
    monkeypatch.setenv("LAMINA_USER", "tess")
    assert access.require("train") == "tess"
    with pytest.raises(
        LaminaError,
        match=r"policy.yaml: user 'tess' \(roles: trainer\) lacks permission 'promote.production'",
    ):
        access.require("promote.production")
    monkeypatch.setenv("LAMINA_USER", "nobody")
    with pytest.raises(LaminaError, match=r"user 'nobody' \(roles: none\) lacks permission 'read'"):
        access.require("read")


def test_only_policy_holders_can_grant(monkeypatch):
    access.init_policy("admin")
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.grant("tess", "trainer")
    before = access.policy_path().read_bytes()
    monkeypatch.setenv("LAMINA_USER", "tess")
    with pytest.raises(LaminaError, match=r"lacks permission 'policy'"):
        access.grant("tess", "admin")
    assert access.policy_path().read_bytes() == before


def test_grant_unknown_role_changes_nothing(monkeypatch):
    access.init_policy("admin")
    monkeypatch.setenv("LAMINA_USER", "admin")
    before = access.policy_path().read_bytes()
    with pytest.raises(LaminaError, match=r"unknown role 'superuser'"):
        access.grant("tess", "superuser")
    assert access.policy_path().read_bytes() == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: p["users"].update({"bob": ["wizard"]}),
            r"policy.yaml: users.bob.0: unknown role 'wizard'",
        ),
        (
            lambda p: p["roles"].update({"viewer": ["read", "reed"]}),
            r"policy.yaml: roles.viewer.1: unknown permission 'reed'",
        ),
        (lambda p: p.update({"four_eye": ["production"]}), r"policy.yaml: four_eye: unknown key"),
        (lambda p: p.update({"users": ["bob"]}), r"policy.yaml: users: Input should be a valid dictionary"),
    ],
)
def test_malformed_policy_names_the_key(edit, message):
    access.init_policy("admin")
    data = yaml.safe_load(access.policy_path().read_text())
    edit(data)
    access.policy_path().write_text(yaml.safe_dump(data))
    with pytest.raises(LaminaError, match=message):
        access.require("read", user="admin")


def test_invalid_yaml_names_the_line():
    access.init_policy("admin")
    access.policy_path().write_text("users:\n  bob: [viewer\nroles: {}\n")
    with pytest.raises(LaminaError, match=r"policy.yaml:\d+: not valid YAML"):
        access.load_policy()


def test_default_roles_separate_duties():
    policy = access.PolicySpec()
    policy.users = {
        "t": ["trainer"],
        "a": ["approver"],
        "d": ["deployer"],
        "s": ["data-steward"],
        "v": ["viewer"],
    }
    table = {u: {p for p in access.PERMISSIONS if access.allowed(u, p, policy)} for u in policy.users}
    assert table["t"] == {"read", "train", "register"}
    assert table["a"] == {"read", "promote.staging", "promote.production"}
    assert table["d"] == {"read", "promote.staging", "rollback", "serve", "incident"}
    assert table["s"] == {"read", "data.write", "data.forget"}
    assert table["v"] == {"read"}


def test_identity_must_match_server_credentials(monkeypatch):
    access.init_policy("alice")
    monkeypatch.setenv("LAMINA_USER", "alice")
    monkeypatch.setenv("LAMINA_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    with pytest.raises(
        LaminaError, match=r"LAMINA_USER: acting as 'alice' but the MLflow credentials are 'bob'"
    ):
        access.require("read")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert access.require("read") == "alice"
    monkeypatch.delenv("LAMINA_TRACKING_URI")  # the embedded store: no server identity to match
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert access.require("read") == "alice"
