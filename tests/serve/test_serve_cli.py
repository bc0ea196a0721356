"""`lamina keys issue/list/revoke` and `lamina serve`'s refusals, through `lamina.cli.main`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def lamina(cli_factory):
    return cli_factory(user="admin", merge_err=True)


def test_keys_issue_list_revoke(registry, lamina):
    from lamina.governance import access

    code, out, _ = lamina("keys", "issue", "--user", "app", "--model", "tickets", "--rate", "5/s", "--json")
    issued = json.loads(out)
    assert code == 0 and issued["key"].startswith(f"lmn_{issued['id']}_") and issued["models"] == ["tickets"]
    assert "consumer" in access.load_policy().users["app"]
    code, out, _ = lamina("keys", "list", "--json")
    (listed,) = json.loads(out)
    assert "key" not in listed and "hash" not in listed and listed["rate"] == "5/s"
    code, out, _ = lamina("keys", "revoke", issued["id"])
    assert code == 0 and "revoked" in out
    code, _, out = lamina("keys", "revoke", issued["id"])
    assert code == 2 and "already revoked" in out
    code, _, out = lamina("keys", "issue", "--user", "app", "--rate", "fast")
    assert code == 2 and "--rate 'fast'" in out


def test_serve_refuses_without_the_serve_permission_or_nothing_to_serve(registry, lamina):
    code, _, out = lamina("serve", "tickets@production", user="alice")
    assert code == 2 and "lacks permission 'serve'" in out
    code, _, out = lamina("serve", "tickets@staging", user="dana")
    assert code == 2 and "no version of tickets has alias 'staging'" in out
