"""Lineage back from a version to its data, and forward from a dataset version to every model."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_runs import make_run

from lamina.errors import LaminaError
from lamina.registry import aliases, lineage, versions


@pytest.fixture
def chain(runs, tmp_path, monkeypatch):
    """tickets/1 from run-a on ds-1; tickets/2 fine-tuned from tickets/1's directory on ds-2."""
    v1 = versions.register(make_run(tmp_path / "l", "run-1", dataset="ds-1"), "tickets")
    child = make_run(tmp_path / "l", "run-2", dataset="ds-2", base_path=v1["path"], seed=3)
    v2 = versions.register(child, "tickets")
    versions.register(make_run(tmp_path / "l", "run-3", dataset="ds-other", seed=4), "other")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 2, "production")
    return v1, v2


def test_lineage_follows_parent_versions_back_to_data(chain):
    info = lineage.lineage("tickets@production")
    assert [(n["name"], n["version"], n["dataset_version"]) for n in info["chain"]] == [
        ("tickets", 2, "ds-2"),
        ("tickets", 1, "ds-1"),
    ]
    assert info["chain"][0]["parent"] == {"name": "tickets", "version": 1}
    assert info["chain"][0]["aliases"] == ["production"]
    text = lineage.render(info)
    lines = [line.strip() for line in text.splitlines()]
    # oldest first: source -> dataset -> run -> version -> aliases, then the child
    assert lines.index(
        "dataset  ds-1 (train sha256 " + info["chain"][1]["data"]["train_sha256"][:16] + "…)"
    ) < lines.index(next(ln for ln in lines if ln.startswith("run      run-2")))
    assert "aliases  production" in lines
    assert any(ln.startswith("version  tickets/2 (gate passed") for ln in lines)


def test_lineage_by_dataset_lists_runs_and_descendant_versions(chain):
    info = lineage.for_dataset("ds-1")
    assert [r["run_id"] for r in info["runs"]] == ["run-1"]
    assert [(v["version"], v["via"]) for v in info["versions"]] == [
        ("tickets/1", None),
        ("tickets/2", "tickets/1"),
    ]
    assert (
        "tickets/2 from run run-2 (through parent tickets/1); aliases: production"
        in lineage.render_dataset(info)
    )
    assert lineage.for_dataset("ds-2")["versions"][0]["version"] == "tickets/2"
    with pytest.raises(LaminaError, match=r"^--dataset ds-none: no dataset version in the catalog"):
        lineage.for_dataset("ds-none")  # an unknown id is an error, not an empty answer


def test_lineage_refuses_tampered_lineage_record(chain):
    v1, _ = chain
    record = Path(v1["path"]) / "lineage.json"
    record.write_text(record.read_text().replace("ds-1", "ds-X"))
    with pytest.raises(LaminaError, match=r"changed file lineage.json"):
        lineage.lineage("tickets/2")


def test_lineage_and_card_name_the_catalogued_sources(runs, tmp_path):
    """A run trained on a real intake dataset version: its sources and licences reach the card
    and the lineage, read from the intake catalog."""
    import json

    from lamina.data import synthetic
    from lamina.data.intake.pipeline import run_intake
    from lamina.data.intake.sources import SourceInfo, add_source
    from lamina.recipe import IntakeSpec

    rows, _ = synthetic.task_splits(40, 0, seed=5)
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = SourceInfo("helpdesk-2026", licence="cc-by-4.0", origin="synthetic", purpose="support bot",
                      lawful_basis="consent", consent_ref="form-7")  # fmt: skip
    src = add_source(path, info)
    vid = run_intake("tickets", [(src, "auto")], IntakeSpec()).version_id
    v = versions.register(make_run(tmp_path / "l", "run-cat", dataset=vid), "tickets")
    card = (Path(v["path"]) / "README.md").read_text()
    assert f"  - helpdesk-2026 — licence: cc-by-4.0, lawful basis: consent, sha256 {src.sha256}" in card
    text = lineage.render(lineage.lineage("tickets/1"))
    assert "source   helpdesk-2026 (licence: cc-by-4.0)" in text and f"dataset  {vid}" in text
    assert lineage.for_dataset(vid)["versions"][0]["version"] == "tickets/1"
    assert lineage.for_dataset(vid[:12])["dataset"] == vid  # a prefix, as the catalog accepts
    assert lineage.for_dataset("tickets")["versions"][0]["version"] == "tickets/1"  # the dataset's name


def test_later_stages_count_as_built_on_the_dataset(runs, tmp_path, monkeypatch):
    """A DPO run continuing an SFT run on ds-sft (its own data is ds-prefs) reached ds-sft too."""
    import json

    sft = make_run(tmp_path / "s", "run-sft", dataset="ds-sft", logged=False)
    dpo = make_run(tmp_path / "s", "run-dpo", dataset="ds-prefs", seed=2, logged=False)
    info = json.loads((dpo / "run.json").read_text())
    info.update(parent_run=str(sft), stage="dpo", objective="dpo")
    (dpo / "run.json").write_text(json.dumps(info))
    from lamina.registry import tracking

    tracking.log_run(sft)
    tracking.log_run(dpo)  # as training logs it, with its parent
    versions.register(dpo, "tickets")
    found = lineage.for_dataset("ds-sft")
    assert [(r["run_id"], r["via"]) for r in found["runs"]] == [("run-sft", None), ("run-dpo", "run-sft")]
    assert [v["version"] for v in found["versions"]] == ["tickets/1"]
    assert "run-dpo (mlflow" in lineage.render_dataset(
        found
    ) and "(continued from run run-sft)" in lineage.render_dataset(found)
    text = lineage.render(lineage.lineage("tickets/1"))
    assert text.index("run      run-sft (stage sft, lora)") < text.index("run      run-dpo (mlflow")
