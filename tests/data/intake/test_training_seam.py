"""The seam to training: raw recipe files go through intake; licences are enforced."""

from __future__ import annotations

import pytest
from intake_fixtures import info, tickets, write_jsonl

from lamina.data import catalog
from lamina.data.intake import prepare_for_training
from lamina.data.intake.pipeline import run_intake
from lamina.data.intake.sources import add_source
from lamina.errors import LaminaError
from lamina.recipe import parse_recipe

# What `lamina data add` would ask of these files, declared in the recipe.
PROVENANCE = {"origin": "helpdesk export, 2026-11", "purpose": "ticket parser fine-tuning",
              "lawful_basis": "contract", "retain_until": "2030-01-01"}  # fmt: skip


def _recipe(**data):
    raw = {"provenance": PROVENANCE} if "train" in data else {}
    return parse_recipe({"name": "r", "data": {**raw, **data}, "intake": {"workers": 1}})


def test_raw_files_without_a_licence_are_refused_and_nothing_registered(corpus):
    with pytest.raises(LaminaError, match="^data.licence: raw data file .* has no licence"):
        prepare_for_training(_recipe(train=str(corpus)))
    assert catalog.snapshot_table()["sources"] == []


def test_raw_files_without_provenance_are_refused_and_nothing_registered(corpus):
    # Before: taken in silently on lawful basis "legitimate_interest", whatever the data was.
    recipe = parse_recipe({"name": "r", "data": {"train": str(corpus), "licence": "mit"}, "intake": {"workers": 1}})
    with pytest.raises(LaminaError, match=r"^data.provenance: raw data file .* has no provenance; declare "
                                          r"`data.provenance` with origin, purpose and lawful_basis \(one of consent"):
        prepare_for_training(recipe)
    assert catalog.snapshot_table()["sources"] == []


def test_raw_files_are_recorded_with_the_declared_provenance(corpus):
    prepare_for_training(_recipe(train=str(corpus), licence="mit"))
    with catalog.session() as s:
        (src,) = [row.provenance() for row in s.query(catalog.Source)]
    assert src["lawful_basis"] == "contract" and src["purpose"] == "ticket parser fine-tuning"
    assert src["origin"].startswith("helpdesk export, 2026-11 (file ") and src["retain_until"] == "2030-01-01"
    assert src["personal_data"] is True and src["consent_ref"] is None
    with pytest.raises(LaminaError, match=r"^data.provenance.lawful_basis: .* held on lawful basis 'contract', and "
                                          r"this recipe declares 'legitimate_interest'"):
        prepare_for_training(parse_recipe({"name": "r", "intake": {"workers": 1}, "data": {
            "train": str(corpus), "licence": "mit", "provenance": {**PROVENANCE, "lawful_basis": "legitimate_interest"}}}))
    with pytest.raises(LaminaError, match=r"data.provenance: .*needs `consent_ref`"):
        _recipe(train=str(corpus), licence="mit", provenance={**PROVENANCE, "lawful_basis": "consent"})


def test_raw_files_are_taken_in_and_only_masked_records_come_back(corpus, tmp_path):
    held = write_jsonl(tmp_path / "held.jsonl", tickets(10, seed=4))
    prepared = prepare_for_training(_recipe(train=str(corpus), eval=str(held), licence="mit"))
    assert len(prepared.eval) == 10 and len(prepared.train) == 120  # an eval file: no hash split of train
    assert prepared.format == "chat" and prepared.manifest["id"] == prepared.version_id
    flat = str(prepared.train) + str(prepared.eval)
    assert "@example" not in flat and "<EMAIL_ADDRESS>" in flat
    roles = {s["name"].split("-")[0]: s["role"] for s in prepared.manifest["sources"]}
    assert roles == {"tickets": "auto", "held": "eval"}
    # The same files again reuse the registered sources and give the same version.
    again = prepare_for_training(_recipe(train=str(corpus), eval=str(held), licence="mit"))
    assert again.version_id == prepared.version_id
    assert len(catalog.snapshot_table()["sources"]) == 2


def test_licence_outside_the_recipe_list_names_the_source(corpus):
    src = add_source(corpus, info("scraped", licence="cc-by-nc-4.0"))
    run_intake("scraped-set", [(src, "auto")], _recipe(dataset="x").intake)
    with pytest.raises(
        LaminaError, match="^source scraped: licence 'cc-by-nc-4.0' of source 'scraped' is not accepted"
    ):
        prepare_for_training(_recipe(dataset="scraped-set"))
    ok = parse_recipe(
        {"data": {"dataset": "scraped-set"}, "intake": {"workers": 1, "licences": ["cc-by-nc-4.0"]}}
    )
    assert prepare_for_training(ok).manifest["name"] == "scraped-set"


def test_dataset_by_id_prefix_and_withdrawn_versions(source):
    from lamina.registry.withdrawal import forget_subject

    v1 = run_intake("tk", [(source, "auto")], _recipe(dataset="x").intake)
    assert prepare_for_training(_recipe(dataset=v1.version_id[:12])).version_id == v1.version_id
    forget_subject("subject-1")
    with pytest.raises(LaminaError, match="^data.dataset: dataset version .* was withdrawn"):
        prepare_for_training(_recipe(dataset=v1.version_id[:12]))
    with pytest.raises(LaminaError, match="^data.dataset: no dataset version or name 'nope'"):
        prepare_for_training(_recipe(dataset="nope"))


def test_a_concurrent_registration_of_the_same_file_is_reused(corpus, monkeypatch):
    from lamina.data.intake import training

    real = training.add_source

    def registered_meanwhile(path, info):
        real(path, info)  # the other run wins the race...
        raise LaminaError("a source named ... already exists", "--name")  # ...and we lose it

    monkeypatch.setattr(training, "add_source", registered_meanwhile)
    plan = training._plan_source(str(corpus), _recipe(train=str(corpus), licence="mit"), "train")
    assert plan.source.id is None  # planned, not yet registered
    src = training._register(plan)
    assert src.id is not None and src.licence == "mit" and src.records == 120


@pytest.mark.parametrize("tamper", ["answer", "half", "counts", "licence"])
def test_an_edited_dataset_version_is_refused_before_training(source, tamper):
    """A version is named by the sha256 of its records; an edited answer, deleted records or
    an edited manifest (counts, licence) must not be trained on unnoticed."""
    import json

    v = run_intake("tk", [(source, "auto")], _recipe(dataset="x").intake)
    train = v.path / "train.jsonl"
    lines = train.read_text().splitlines()
    manifest = json.loads((v.path / "manifest.json").read_text())
    if tamper == "answer":
        rec = json.loads(lines[0])
        rec["messages"][-1]["content"] = "TEAM: nobody"
        train.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    elif tamper == "half":
        train.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    elif tamper == "counts":
        manifest["counts"]["train"] += 5
    else:
        manifest["sources"][0]["licence"] = "apache-2.0"
    if tamper in ("counts", "licence"):
        (v.path / "manifest.json").write_text(json.dumps(manifest))
    expected = {"answer": "records changed since intake", "half": "records changed since intake",
                "counts": "manifest does not describe version", "licence": "manifest licence 'apache-2.0'"}
    with pytest.raises(LaminaError, match=expected[tamper]):
        prepare_for_training(_recipe(dataset="tk"))
