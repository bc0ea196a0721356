"""Tamperings found by the #20 acceptance pass that slipped through: a licence edited in a run's
recipe.yaml, weights edited and re-signed with the workspace's own key, and a retrain command
printed by `lamina data forget` that training refuses, `lamina verify` blind to
an edited base, and a relative-gate warning suggesting a bound in the wrong direction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from registry_runs import make_run

from lamina import workspace
from lamina.data.intake.withdraw import WithdrawalReport
from lamina.errors import LaminaError
from lamina.registry import resolve, signing, tracking, versions


def test_a_licence_edited_in_the_recipe_before_register_is_refused(runs, tmp_path):
    """The trainer writes no licence into run.json: a raw-file run's licence is its recipe's,
    which the card and lineage used unchecked (`internal` edited to `apache-2.0` registered)."""
    run = make_run(tmp_path / "raw", "run-raw", logged=False)
    info = json.loads((run / "run.json").read_text())
    del info["data"]["licence"]  # as the real trainer writes it
    (run / "run.json").write_text(json.dumps(info))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["licence"] = "internal"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    tracking.log_run(run)
    recipe["data"]["licence"] = "apache-2.0"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(LaminaError, match=r"run-raw: the run differs from what was logged .*\(lamina.data.licence\)"):
        versions.register(run, "tickets")
    assert tracking.client().search_registered_models() == []
    recipe["data"]["licence"] = "internal"  # put back: registers, and the lineage says internal
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    path = Path(versions.register(run, "tickets")["path"])
    assert json.loads((path / "lineage.json").read_text())["licence"] == "internal"


def test_weights_edited_and_re_signed_with_the_same_key_are_refused(runs):
    """The signing key is the workspace's own: re-signing edited weights with it verified as
    valid. The signed listing is now held to the digest training logged in the store."""
    path = Path(versions.register(runs[0], "tickets")["path"])
    assert resolve("tickets/1") == path
    weights = path / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    signing.sign_dir(path)  # same key: the signature alone holds
    assert signing.verify_dir(path) == signing.fingerprint()
    with pytest.raises(LaminaError, match=r"tickets/1: its adapter/ files differ from what training logged \(MLflow run"):
        resolve("tickets/1")


def test_forget_prints_a_retrain_command_naming_the_successor_version(runs):
    """The recipe names the withdrawn dataset version, which `lamina train` refuses; the
    printed command must override it with the successor (raw-file recipes stay as they are)."""
    from lamina.cli.data import _withdrawal_text

    for run_id, data in (("run-ds", {"dataset": "old-version-id"}), ("run-files", {"train": "/data/t.jsonl"})):
        (workspace.home() / "runs" / run_id).mkdir(parents=True)
        (workspace.home() / "runs" / run_id / "recipe.yaml").write_text(yaml.safe_dump({"data": data}))
    report = WithdrawalReport(
        reason="subject withdrawal (ab12)",
        versions=[{"old": "old-version-id", "name": "tickets", "new": "new-version-id"}],
        runs=[{"run": r, "path": "", "dataset_version": "old-version-id"} for r in ("run-ds", "run-files")],
        models=[{"version": "tickets/1", "run_id": "run-ds", "aliases": ["production"]},
                {"version": "tickets/2", "run_id": "run-files", "aliases": []}],
    )
    lines = _withdrawal_text(report).splitlines()
    recipe = workspace.home() / "runs" / "run-ds" / "recipe.yaml"
    assert f"    retrain:   lamina train {recipe} data.dataset=new-version-id   (promotion is refused until then)" in lines
    raw = workspace.home() / "runs" / "run-files" / "recipe.yaml"
    assert f"    retrain:   lamina train {raw}   (promotion is refused until then)" in lines


def test_verify_holds_an_adapter_version_to_its_base(runs, tmp_path, cli_factory):
    """`lamina verify` said "signature valid" for a version whose base had been edited (its
    outputs changed); it now checks the base against the hashes recorded at training."""
    lamina = cli_factory(user="alice")
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"w")  # the hashes make_run records for its base
    (base / "tokenizer.json").write_bytes(b"t")
    versions.register(make_run(tmp_path / "more", "run-c", seed=2, base_path=str(base)), "tickets")
    code, out, _ = lamina("verify", "tickets/1")
    assert code == 0 and "signature valid" in out and f"base {base}: unchanged since training" in out
    (base / "model.safetensors").write_bytes(b"\0")
    code, out, err = lamina("verify", "tickets/1")
    assert code == 2 and out == ""
    assert err.strip() == f"error: {base}: base file model.safetensors changed since the version was trained"


def test_the_relative_gate_warning_suggests_a_bound_in_the_gates_direction():
    """`lamina eval` suggested `task.exact_match <= 0.05` as the absolute floor of a score
    gated `>= base + ...`: that bound would pass only bad models."""
    from lamina.eval.report import gate_doc
    from lamina.gates import parse_gates

    gates = parse_gates(["task.exact_match >= base + 0.3", "safety.unsafe_rate <= baseline + 0.05"])
    warnings = gate_doc(gates, ["task", "safety"], {}, None, {}, [])["warnings"]
    assert [w.split("(e.g. ")[1].split(")")[0] for w in warnings] == [
        "`safety.unsafe_rate <= 0.05`", "`task.exact_match >= 0.5`"]


def _evaluated(run: Path, exact_match: float) -> None:
    """The verdict and report as `lamina eval` writes them (numbers by suite in gate.json),
    signed with the workspace key."""
    passed = exact_match >= 0.5
    gate = {"passed": passed, "results": {"task": {"exact_match": exact_match}},
            "checks": [{"expr": "task.exact_match >= 0.5", "value": exact_match, "threshold": 0.5, "passed": passed}]}
    (run / "eval" / "gate.json").write_text(json.dumps(gate))
    report = json.loads((run / "eval" / "report.json").read_text())
    report["results"]["candidate"]["task"]["exact_match"] = exact_match
    (run / "eval" / "report.json").write_text(json.dumps(report))
    signing.sign_dir(run / "eval")


def test_a_verdict_rewritten_and_re_signed_with_the_workspace_key_is_refused(runs, tmp_path):
    """gate.json and report.json rewritten together and re-signed with the workspace's own key
    pass every local check; the numbers `lamina eval` logged to the tracking store do not move."""
    run = make_run(tmp_path / "ev", "run-ev", passed=False)
    _evaluated(run, 0.2)
    tracking.log_eval_of_run(run, run / "eval")  # what `lamina eval` logs
    _evaluated(run, 0.8)  # the forgery
    with pytest.raises(LaminaError, match=r"gate.json: the verdict's numbers differ from what the evaluation logged "
                                          r"to MLflow run .*task.exact_match 0.8 \(logged 0.2\)"):
        versions.register(run, "tickets")
    assert tracking.client().search_registered_models() == []
    honest = make_run(tmp_path / "ev", "run-ok")
    _evaluated(honest, 0.8)
    tracking.log_eval_of_run(honest, honest / "eval")
    assert versions.register(honest, "tickets")["version"] == 1
