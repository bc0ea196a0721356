"""Register, promote, roll back, resolve: gates, signatures, roles and four eyes enforced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from registry_runs import make_run

from lamina.errors import LaminaError
from lamina.governance import audit
from lamina.registry import aliases, resolve, signing, tracking, versions


def _as(monkeypatch, user):
    monkeypatch.setenv("LAMINA_USER", user)


def _registry_entries(name="tickets"):
    root = versions.registry_root() / name
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_register_creates_signed_carded_version_with_lineage_tags(runs):
    run_a, _ = runs
    result = versions.register(run_a, "tickets")
    assert result["version"] == 1
    path = Path(result["path"])
    assert signing.verify_dir(path) == signing.fingerprint()
    assert (path / "adapter" / "adapter_model.safetensors").read_bytes() == (
        run_a / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    card = (path / "README.md").read_text()
    assert card.startswith("---\nbase_model: lamina/tiny\nbase_model_relation: adapter\nbase_model_sha256: ")
    assert "## Governance" in card and "Gate verdict: passed (1/1 checks passed" in card
    assert f"sha256:{signing.fingerprint()}" in card
    mv = tracking.client().get_model_version("tickets", "1")
    assert Path(mv.source) == path
    assert mv.tags["lamina.dataset_version"] == "ds-tickets-001"
    assert mv.tags["lamina.run_id"] == "run-a"
    assert mv.tags["lamina.trained_by"] == "alice"
    assert mv.tags["lamina.gate"] == "passed"
    assert mv.tags["lamina.parent"] == "none"
    assert mv.run_id == mv.tags["lamina.mlflow_run_id"]
    run = tracking.client().get_run(mv.run_id)
    assert run.data.tags["lamina.gate"] == "true"
    logged = {a.path for a in tracking.client().list_artifacts(mv.run_id, "model_card")}
    assert logged == {"model_card/README.md"}
    last = audit.log_path().read_text().splitlines()[-1]
    assert json.loads(last)["action"] == "register" and json.loads(last)["details"]["version"] == 1


def test_failed_gate_is_refused_and_nothing_is_made(runs, tmp_path):
    failing = make_run(tmp_path / "more", "run-f", passed=False)
    with pytest.raises(
        LaminaError, match=r"gate.json: the gate did not pass \(failed: task.exact_match >= 0.5\)"
    ):
        versions.register(failing, "tickets")
    assert tracking.client().search_registered_models() == []
    assert _registry_entries() == []


def test_missing_gate_is_refused(runs):
    run_a, _ = runs
    (run_a / "eval" / "gate.json").unlink()
    with pytest.raises(LaminaError, match=r"gate.json: no gate result"):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


def test_viewer_cannot_register(runs, monkeypatch):
    _as(monkeypatch, "vera")
    with pytest.raises(LaminaError, match=r"user 'vera' \(roles: viewer\) lacks permission 'register'"):
        versions.register(runs[0], "tickets")
    assert tracking.client().search_registered_models() == []
    assert json.loads(audit.log_path().read_text().splitlines()[-1])["action"] == "denied"


def test_bad_name_is_refused(runs):
    with pytest.raises(LaminaError, match=r"name '../x'"):
        versions.register(runs[0], "../x")


def test_promote_four_eyes_and_roles(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    # alice trained it; even holding the approver role she cannot approve it for production.
    _as(monkeypatch, "admin")
    from lamina.governance import access

    access.grant("alice", "approver")
    _as(monkeypatch, "alice")
    with pytest.raises(LaminaError, match=r"four-eyes policy: 'alice' trained this version"):
        aliases.promote("tickets", 1, "production")
    assert aliases.current("tickets", "production") is None
    aliases.promote("tickets", 1, "staging")  # staging needs no second person
    assert aliases.current("tickets", "staging") == 1
    _as(monkeypatch, "dana")
    with pytest.raises(LaminaError, match=r"lacks permission 'promote.production'"):
        aliases.promote("tickets", 1, "production")
    _as(monkeypatch, "bob")
    move = aliases.promote("tickets", 1, "production", reason="ship it")
    assert (move["from"], move["to"], move["user"]) == (None, 1, "bob")
    assert aliases.current("tickets", "production") == 1
    with pytest.raises(LaminaError, match=r"unknown alias"):
        aliases.promote("tickets", 1, "v3")


def test_promote_refuses_tampered_version(runs, monkeypatch):
    path = Path(versions.register(runs[0], "tickets")["path"])
    (path / "adapter" / "adapter_config.json").write_text('{"r": 64}')
    _as(monkeypatch, "bob")
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_config.json"):
        aliases.promote("tickets", 1, "production")
    assert aliases.current("tickets", "production") is None


def test_rollback_points_back_and_history_records_every_move(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    versions.register(runs[1], "tickets")
    _as(monkeypatch, "bob")
    aliases.promote("tickets", 1, "production", reason="first")
    aliases.promote("tickets", 2, "production", reason="second")
    _as(monkeypatch, "dana")
    with pytest.raises(LaminaError, match=r"needs a reason"):
        aliases.rollback("tickets", "production", "  ")
    move = aliases.rollback("tickets", "production", reason="v2 answers in the wrong format")
    assert (move["from"], move["to"]) == (2, 1)
    assert aliases.current("tickets", "production") == 1
    with pytest.raises(LaminaError, match=r"no earlier version was at production"):
        aliases.rollback("tickets", "production", reason="again")
    events = aliases.history("tickets")
    assert [(e["op"], e.get("from"), e.get("to", e.get("version"))) for e in events] == [
        ("register", None, 1),
        ("register", None, 2),
        ("promote", None, 1),
        ("promote", 1, 2),
        ("rollback", 2, 1),
    ]
    assert events[-1]["reason"] == "v2 answers in the wrong format" and events[-1]["user"] == "dana"
    assert audit.verify().ok


def test_trainer_cannot_roll_back(runs, monkeypatch):
    with pytest.raises(LaminaError, match=r"'alice' \(roles: trainer\) lacks permission 'rollback'"):
        aliases.rollback("tickets", "production", reason="x")


def test_resolve_verifies_before_returning(runs, monkeypatch):
    path = Path(versions.register(runs[0], "tickets")["path"])
    _as(monkeypatch, "bob")
    aliases.promote("tickets", 1, "production")
    assert resolve("tickets@production") == path
    assert resolve("tickets/1") == path
    (path / "tokenizer" / "extra.json").write_text("{}")
    with pytest.raises(LaminaError, match=r"added file tokenizer/extra.json"):
        resolve("tickets@production")
    with pytest.raises(LaminaError, match=r"no version of tickets has alias 'staging'"):
        resolve("tickets@staging")
    with pytest.raises(LaminaError, match=r"ref 'tickets'"):
        resolve("tickets")
    with pytest.raises(LaminaError, match=r"tickets/9: no such registered version"):
        resolve("tickets/9")


def test_gate_from_another_runs_evaluation_is_refused(runs):
    run_a, _ = runs
    other = {"candidate": {"run_id": "run-b"}, "results": {"candidate": {"task": {"exact_match": 0.8}}}}
    (run_a / "eval" / "report.json").write_text(json.dumps(other))
    signing.sign_dir(run_a / "eval")  # a whole signed evaluation of another run, copied in
    with pytest.raises(LaminaError, match=r"report.json: the evaluation was of run 'run-b', not 'run-a'"):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


def test_run_json_edited_after_training_is_refused(runs):
    """alice's run was logged when it finished; she then edits run.json to claim carol trained it."""
    run_a, _ = runs
    tracking.log_run(run_a)
    info = json.loads((run_a / "run.json").read_text())
    info["user"] = "carol"
    info["data"]["train_sha256"] = "0" * 64
    (run_a / "run.json").write_text(json.dumps(info))
    with pytest.raises(
        LaminaError,
        match=r"run-a: the run differs from what was logged .*\(lamina.user, lamina.data.train_sha256\)",
    ):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


@pytest.mark.parametrize("edit", ["licence", "new-id-and-user", "weights-and-new-id"])
def test_run_json_rewritten_before_register_is_refused(runs, edit):
    """Edits that a run-id-keyed check missed: the licence, a new run id and user (so a
    fresh MLflow run would have been logged at register), flipped weights with a new id."""
    run_a, _ = runs
    info = json.loads((run_a / "run.json").read_text())
    if edit == "licence":
        info["data"]["licence"] = "apache-2.0"
        expected = r"the run differs from what was logged .*\(lamina.data.licence\)"
    else:
        info["id"], info["user"] = "run-new", "carol"
        expected = r"run.json says run 'run-new', but training logged this directory as run 'run-a'"
    if edit == "weights-and-new-id":
        weights = run_a / "adapter" / "adapter_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    (run_a / "run.json").write_text(json.dumps(info))
    with pytest.raises(LaminaError, match=expected):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


def test_a_run_no_training_logged_is_refused(tmp_path):
    copied = make_run(tmp_path / "elsewhere", "run-copy", logged=False)
    with pytest.raises(LaminaError, match=r"run-copy: no training run logged this directory"):
        versions.register(copied, "tickets")


def test_four_eyes_survives_an_edited_version_tag(runs, monkeypatch):
    """The version's trained_by tag is edited in MLflow; the run logged at training time still names alice."""
    versions.register(runs[0], "tickets")
    tracking.client().set_model_version_tag("tickets", "1", "lamina.trained_by", "carol")
    _as(monkeypatch, "admin")
    from lamina.governance import access

    access.grant("alice", "approver")
    _as(monkeypatch, "alice")
    with pytest.raises(LaminaError, match=r"four-eyes policy: 'alice' trained this version"):
        aliases.promote("tickets", 1, "production")


def test_weights_swapped_after_training_are_refused(runs):
    run_a, run_b = runs
    tracking.log_run(run_a)
    shutil.copy(
        run_b / "adapter" / "adapter_model.safetensors", run_a / "adapter" / "adapter_model.safetensors"
    )
    with pytest.raises(
        LaminaError, match=r"the run differs from what was logged .*\(lamina.artifact_sha256\)"
    ):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


def test_gate_edited_to_pass_is_refused(runs, tmp_path):
    """A failed run's gate.json edited to `passed: true` before `register`: the evaluation's
    signature names the edited file; re-signed with the workspace key, the report's numbers
    still give a fail."""
    failing = make_run(tmp_path / "more", "run-f", passed=False)
    gate_path = failing / "eval" / "gate.json"
    gate = json.loads(gate_path.read_text())
    gate["passed"] = True
    gate["checks"][0]["passed"] = True
    gate_path.write_text(json.dumps(gate))
    with pytest.raises(LaminaError, match=r"signature check failed: changed file gate.json"):
        versions.register(failing, "tickets")
    signing.sign_dir(failing / "eval")
    with pytest.raises(LaminaError, match=r"gate.json disagrees with report.json: task.exact_match >= 0.5 \(recorded pass"):
        versions.register(failing, "tickets")
    assert tracking.client().search_registered_models() == []


def test_unsigned_evaluation_is_refused(runs):
    run_a, _ = runs
    (run_a / "eval" / signing.SIGNATURE).unlink()
    with pytest.raises(LaminaError, match=r"eval: the evaluation is not signed"):
        versions.register(run_a, "tickets")
    assert tracking.client().search_registered_models() == []


def test_version_trained_on_withdrawn_records_cannot_be_promoted(runs, monkeypatch):
    """After `lamina data forget` marks a run "retrain required", its registered version is
    refused at promotion (it was recorded, not enforced)."""
    from lamina.data import catalog

    versions.register(runs[0], "tickets")
    versions.register(runs[1], "tickets")
    with catalog.session() as s:  # what forget_subject records for each run it reached
        s.add(catalog.RetrainRequired(run="run-a", dataset_version="ds-tickets-001",
                                      reason="subject withdrawal (ab12)", at=catalog.now()))
    _as(monkeypatch, "bob")
    with pytest.raises(LaminaError, match=r"tickets/1: trained on withdrawn records \(run run-a: subject withdrawal"):
        aliases.promote("tickets", 1, "production")
    assert aliases.current("tickets", "production") is None
    aliases.promote("tickets", 2, "production")  # run-b did not see the withdrawn records
    assert aliases.current("tickets", "production") == 2


def test_alias_moved_with_mlflows_own_api_is_refused_and_reported(runs, monkeypatch):
    """MLflow's client (what its UI's alias editor calls) moves an alias with no gate, no four
    eyes and no audit entry: loading through the alias refuses, `audit verify` reports it."""
    from lamina.registry import anchor

    versions.register(runs[0], "tickets")
    versions.register(runs[1], "tickets")
    _as(monkeypatch, "bob")
    aliases.promote("tickets", 1, "production")
    assert resolve("tickets@production").is_dir() and anchor.alias_problems() == []
    tracking.client().set_registered_model_alias("tickets", "production", "2")
    with pytest.raises(LaminaError, match=r"alias production points at version 2, but Lamina's last recorded "
                                          r"move put it at 1 \(promote by bob"):
        resolve("tickets@production")
    assert anchor.alias_problems() == [
        "model tickets: alias production points at version 2, but Lamina's last recorded move put it at 1 "
        f"(promote by bob at {aliases.moves('tickets')[-1]['time']}): it was moved outside Lamina"]
    tracking.client().set_registered_model_alias("tickets", "staging", "2")
    assert any("alias staging points at version 2 but Lamina never moved it" in p for p in anchor.alias_problems())


def test_a_version_re_signed_with_a_replaced_key_is_refused(runs, monkeypatch):
    """`keys init --force` then re-signing edited weights: the signature verifies under the new
    key, but the tracking store recorded the old key as the version's signer."""
    path = Path(versions.register(runs[0], "tickets")["path"])
    (path / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    signing.init_keys(force=True)
    signing.sign_dir(path)
    with pytest.raises(LaminaError, match=r"tickets/1: signed by key sha256:.*, but the registry recorded sha256:"):
        resolve("tickets/1")
