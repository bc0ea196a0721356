"""Release acts are proven, not claimed: promote and rollback need the actor's personal key,
their audit entries carry its signature, four-eyes compares proven people, refusals are
audited and counted, and the audit log's head is kept where the workspace cannot rewrite it."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.fsio import canonical_json
from lamina.governance import access, audit, audit_check, identity
from lamina.registry import aliases, audit_head, tracking, versions


@pytest.fixture
def lamina(cli_factory):
    return cli_factory(user="alice")


def _denied() -> list[dict]:
    return [e for e in audit.entries() if e["action"] == "denied"]


def test_naming_someone_else_without_their_key_is_refused(runs, monkeypatch):
    """Alice trained and registered; on a machine without bob's key, LAMINA_USER=bob is refused."""
    versions.register(runs[0], "tickets")
    identity.key_path("bob").unlink()  # this config directory is alice's: bob's key is not here
    monkeypatch.setenv("LAMINA_USER", "bob")
    with pytest.raises(LaminaError, match=r"LAMINA_USER: cannot prove you are 'bob': no personal key for 'bob'"):
        aliases.promote("tickets", 1, "production", reason="looks fine to 'bob'")
    assert aliases.current("tickets", "production") is None
    (refusal,) = _denied()
    assert (refusal["user"], refusal["details"]["kind"], refusal["details"]["permission"]) == (
        "bob", "identity", "promote.production")
    assert "sig" not in refusal  # nobody could sign it as bob


def test_a_key_not_enrolled_does_not_prove_the_name(runs, monkeypatch):
    """A key made for 'bob' on alice's machine (not the enrolled one) proves nothing."""
    versions.register(runs[0], "tickets")
    identity.create_key("bob", force=True)
    monkeypatch.setenv("LAMINA_USER", "bob")
    with pytest.raises(LaminaError, match=r"is not the one enrolled for 'bob'"):
        aliases.promote("tickets", 1, "production")


def test_promote_and_rollback_entries_carry_the_actors_signature(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    versions.register(runs[1], "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production", reason="first")
    aliases.promote("tickets", 2, "production", reason="second")
    monkeypatch.setenv("LAMINA_USER", "dana")
    aliases.rollback("tickets", "production", reason="bad answers")
    keys = access.load_policy().keys
    signed = {e["action"]: e for e in audit.entries() if e["action"] in ("register", "promote", "rollback")}
    assert signed["register"]["sig"]["key"] == identity.key_id(keys["alice"][-1])
    assert signed["promote"]["sig"]["key"] == identity.key_id(keys["bob"][-1])
    assert signed["rollback"]["sig"]["key"] == identity.key_id(keys["dana"][-1])
    assert audit_check.check() == []

    # Bob's promote re-attributed to alice, re-hashed and re-chained: her signature cannot be made.
    entries = audit.entries()
    for e in entries:
        if e["action"] == "promote":
            e["user"] = "alice"
    _rechain(entries)
    assert audit.verify().ok
    problems = audit_check.signature_problems(audit.entries())
    assert any("claims 'alice' but is signed with key" in p for p in problems), problems


def _rechain(entries: list[dict]) -> None:
    prev = audit.GENESIS
    for e in entries:
        e["prev"] = prev
        e["hash"] = prev = audit.entry_hash(e)
    audit.log_path().write_text("".join(canonical_json(e) + "\n" for e in entries))
    (audit.log_path().parent / "head.json").write_text(json.dumps({"seq": entries[-1]["seq"], "hash": prev}))


def test_four_eyes_and_gate_refusals_are_audited_and_counted(runs, lamina, tmp_path):
    from registry_runs import make_run

    assert lamina("register", str(runs[0]), "--name", "tickets")[0] == 0
    assert lamina("policy", "grant", "alice", "approver", user="admin")[0] == 0
    code, _, err = lamina("promote", "tickets", "1", "--to", "production")
    assert code == 2 and "four-eyes policy: 'alice' trained this version" in err
    failed = make_run(tmp_path / "more", "run-f", passed=False)
    code, _, err = lamina("register", str(failed), "--name", "tickets")
    assert code == 2 and "the gate did not pass" in err
    code, _, err = lamina("promote", "tickets", "1", "--to", "staging", user="vera")
    assert code == 2 and "lacks permission 'promote.staging'" in err
    code, out, _ = lamina("audit", "refusals", "--json")
    info = json.loads(out)
    assert info["total"] == 3
    assert info["by_kind"] == {"four-eyes": 1, "gate": 1, "role": 1}
    assert info["by_user"] == {"alice": 2, "vera": 1}
    assert [r["signed"] for r in info["recent"]] == [True, True, True]  # each actor holds a key here
    code, out, _ = lamina("audit", "refusals")
    assert out.startswith("refusals: 3 (by kind: four-eyes 1, gate 1, role 1; by user: alice 2, vera 1)")


def test_deleting_the_last_entry_and_rewriting_the_head_is_detected(runs, lamina):
    assert lamina("register", str(runs[0]), "--name", "tickets")[0] == 0
    assert lamina("promote", "tickets", "1", "--to", "staging", user="bob")[0] == 0
    entries = audit.entries()
    assert entries[-1]["action"] == "promote"
    _rechain(entries[:-1])  # the promote erased, head.json rewritten to match
    assert audit.verify().ok  # the chain and head.json alone are consistent
    code, out, _ = lamina("audit", "verify")
    assert code == 1
    assert f"truncated: the head kept outside the workspace ({audit.pin_path()}) is seq {entries[-1]['seq']}" in out
    assert f"truncated: the tracking store's anchor is seq {entries[-1]['seq']} by bob" in out


def test_editing_the_last_entry_and_fixing_hash_and_head_is_detected(runs, lamina):
    assert lamina("register", str(runs[0]), "--name", "tickets")[0] == 0
    assert lamina("promote", "tickets", "1", "--to", "staging", user="bob")[0] == 0
    entries = audit.entries()
    entries[-1]["details"]["reason"] = "approved in the meeting"
    _rechain(entries)
    assert audit.verify().ok
    code, out, _ = lamina("audit", "verify")
    seq = entries[-1]["seq"]
    assert code == 1
    assert f"entry seq {seq} (promote by bob): signature does not verify" in out
    assert f"entry seq {seq} differs from the head kept outside the workspace" in out
    assert f"entry seq {seq} differs from the head anchored in the tracking store" in out
    # The forger also owns the config directory: drop the outside copy; the store still tells.
    audit.pin_path().unlink()
    code, out, _ = lamina("audit", "verify")
    assert code == 1 and f"entry seq {seq} differs from the head anchored in the tracking store" in out


def test_every_cli_entry_moves_the_outside_head_and_only_store_users_pay_for_the_store(runs, lamina):
    """A grant (no MLflow) moves the copy in the config directory, not the tracking store; the
    next command that opens the store anyway anchors a head that covers it."""
    assert lamina("register", str(runs[0]), "--name", "tickets")[0] == 0
    anchored = audit_head.read()
    assert anchored["seq"] == audit.entries()[-1]["seq"] and anchored["user"] == "alice"
    calls = audit_head.client_calls()
    assert lamina("policy", "grant", "vera", "trainer", user="admin")[0] == 0
    assert audit_head.client_calls() == calls  # the grant never opened the tracking store
    last = audit.entries()[-1]
    assert json.loads(audit.pin_path().read_text())["seq"] == last["seq"]
    assert audit_head.read()["seq"] == anchored["seq"]
    assert lamina("promote", "tickets", "1", "--to", "staging", user="bob")[0] == 0
    head = audit_head.read()
    assert (head["seq"], head["user"]) == (audit.entries()[-1]["seq"], "bob")
    assert head["sig"] == audit.entries()[-1]["sig"]
    assert tracking.client() is not None
