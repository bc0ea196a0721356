"""A gate verdict holds only against the champion it was computed with: a version evaluated
before production held anything (or against an older production) is refused promotion to
production — and rollout — until `lamina eval NAME/VERSION --gates-only` re-checks its stored
report against the current champion's; the re-check is signed, audited and governs from then on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from registry_runs import make_run

from lamina import gates as G
from lamina.errors import LaminaError
from lamina.eval import report, verdict
from lamina.registry import aliases, signing, verdicts, versions

RELATIVE = ["safety.unsafe_rate <= baseline + 0.05", "safety.unsafe_rate <= 0.5"]
SPEC = {"safety_per_category": 6, "safety_seed": 0, "max_new_tokens": 32, "judge": None, "gates": RELATIVE}


def write_eval(run, candidate: float, base: float, *, gates=RELATIVE, spec=None):
    """The eval/ directory `lamina eval` writes, computed by the real gate and report code,
    with no champion (evaluated before anything was at production) and signed."""
    results = {"candidate": {"safety": {"unsafe_rate": candidate}}, "base": {"safety": {"unsafe_rate": base}}}
    parsed = G.parse_gates(gates)
    checks = G.check_all(parsed, results["candidate"], results["base"], None)
    gate = report.gate_doc(parsed, ["safety"], {"run_id": run.name, "path": str(run)}, None,
                           results["candidate"], checks)  # fmt: skip
    doc = {"created": gate["created"], "candidate": {"ref": str(run), "path": str(run), "run_id": run.name},
           "targets": [{"role": "candidate", "ref": str(run), "path": str(run)}],
           "suites": ["safety"], "spec": {**SPEC, "gates": gates, **(spec or {})},
           "data": {"eval": None, "train": None, "raw_train": None}, "results": results,
           "deltas": {"base": {}, "champion": {}}, "gate": gate, "samples": {}, "notes": {},
           "training": {"history": [], "run": {"id": run.name, "name": run.name}}, "seconds": 1.0}  # fmt: skip
    shutil.rmtree(run / "eval")
    report.write(run / "eval", doc)
    return gate


@pytest.fixture
def released(runs, tmp_path, monkeypatch):
    """tickets/1 at production (unsafe rate 0.02), tickets/2 evaluated before it existed."""
    a, b = runs
    write_eval(a, candidate=0.02, base=0.30)
    gate_b = write_eval(b, candidate=0.20, base=0.30)  # passes against the base: 0.20 <= 0.35
    assert gate_b["passed"] and gate_b["champion"] is None
    versions.register(a, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production")
    monkeypatch.setenv("LAMINA_USER", "alice")
    versions.register(b, "tickets")  # registration records the verdict; release is where it must hold
    return a, b


def test_stale_verdict_is_refused_for_production_and_rollout(released, monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "bob")
    with pytest.raises(LaminaError) as e:
        aliases.promote("tickets", 2, "production")
    msg = str(e.value)
    assert "computed against no champion, but tickets@production is now tickets/1" in msg
    assert "`lamina eval tickets/2 --gates-only`" in msg and "tickets/2" in msg
    assert aliases.current("tickets", "production") == 1
    from lamina.rollout import control

    with pytest.raises(LaminaError, match="--gates-only"):
        control.start("tickets", 2, "production", canary=10)
    aliases.promote("tickets", 2, "staging")  # staging is not the champion's alias


def test_gates_only_recheck_against_the_new_champion_governs_promotion(released, monkeypatch, cli_factory):
    code, out, _ = cli_factory(user="alice")("eval", "tickets/2", "--gates-only", "--json")
    summary = json.loads(out)
    assert code == 1 and summary["passed"] is False  # a failed gate exits 1, as `lamina eval` does
    doc = {**json.loads(Path(summary["report"]).with_name("report.json").read_text()),
           "out_dir": str(Path(summary["report"]).parent)}  # fmt: skip
    gate = doc["gate"]
    # Against the champion's stored 0.02, the threshold is 0.07 and 0.20 fails.
    assert gate["champion"] == {"ref": "tickets@production", "name": "tickets", "version": 1}
    assert gate["checks"][0]["threshold"] == pytest.approx(0.07) and gate["passed"] is False
    assert doc["results"]["champion"] == {"safety": {"unsafe_rate": 0.02}}
    assert gate["rechecked"]["suites_run"] is False
    signing.verify_dir(doc["out_dir"])
    from lamina.governance import audit

    entry = [json.loads(x) for x in audit.log_path().read_text().splitlines()][-1]
    assert entry["action"] == "eval" and entry["user"] == "alice"
    monkeypatch.setenv("LAMINA_USER", "bob")
    with pytest.raises(LaminaError, match=r"the gate did not pass \(failed: safety.unsafe_rate <= baseline"):
        aliases.promote("tickets", 2, "production")


def test_passing_recheck_releases_and_an_edited_one_is_refused(runs, monkeypatch):
    a, b = runs
    write_eval(a, candidate=0.10, base=0.30)
    write_eval(b, candidate=0.12, base=0.30)
    versions.register(a, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production")
    monkeypatch.setenv("LAMINA_USER", "alice")
    versions.register(b, "tickets")
    doc = verdict.recheck("tickets/2")
    assert doc["gate"]["passed"] is True and doc["gate"]["checks"][0]["threshold"] == pytest.approx(0.15)
    gate_file = Path(doc["out_dir"]) / "gate.json"
    saved = gate_file.read_bytes()
    gate_file.write_text(saved.decode().replace('"created": "', '"created": "1'))
    monkeypatch.setenv("LAMINA_USER", "bob")
    with pytest.raises(LaminaError, match="differs from the re-check the tracking store recorded"):
        aliases.promote("tickets", 2, "production")
    gate_file.write_bytes(saved)
    assert aliases.promote("tickets", 2, "production")["to"] == 2


def test_recheck_refuses_numbers_measured_differently(runs, monkeypatch):
    a, b = runs
    write_eval(a, candidate=0.10, base=0.30)
    write_eval(b, candidate=0.12, base=0.30, spec={"safety_seed": 7})
    versions.register(a, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production")
    monkeypatch.setenv("LAMINA_USER", "alice")
    versions.register(b, "tickets")
    with pytest.raises(LaminaError, match=r"measured with a different safety_seed.*`lamina eval tickets/2`"):
        verdict.recheck("tickets/2")
    assert versions.get_version("tickets", 2).tags.get(verdicts.RECHECK_TAG) is None


def test_absolute_gates_do_not_depend_on_the_champion(runs, monkeypatch):
    a, b = runs  # make_run's gate: task.exact_match >= 0.5 only
    versions.register(a, "tickets")
    versions.register(b, "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production")
    assert aliases.promote("tickets", 2, "production")["to"] == 2


def test_gates_only_on_a_run_directory_rewrites_its_signed_eval(tmp_path, runs, monkeypatch):
    a, _ = runs
    write_eval(a, candidate=0.10, base=0.30)
    first = (a / "eval" / "gate.json").read_bytes()
    doc = verdict.recheck(str(a))
    assert doc["out_dir"] == str(a / "eval") and doc["gate"]["passed"] is True
    assert (a / "eval" / "gate.json").read_bytes() != first
    versions.read_gate(a / "eval" / "gate.json")  # still signed, still consistent
    bare = make_run(tmp_path / "other", "run-x", logged=False)
    (bare / "eval" / "report.json").unlink()
    with pytest.raises(LaminaError, match="no stored evaluation to re-check"):
        verdict.recheck(str(bare))
