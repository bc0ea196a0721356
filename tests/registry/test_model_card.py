"""Model cards: Hugging Face metadata that parses, the method decides relation and library."""

from __future__ import annotations

import pytest
import yaml

from lamina.registry import model_card

LINEAGE = {
    "name": "tickets",
    "run_id": "run-a",
    "artifact": "adapter",
    "dataset_version": "ds-1",
    "licence": "CC-BY-4.0",
    "sources": [{"name": "helpdesk", "path": "helpdesk", "licence": "cc-by-4.0", "lawful_basis": "consent"}],
    "parent": {"name": "tickets", "version": 1},
    "trained_by": "alice",
    "registered_by": "alice",
    "registered": "2026-11-29T00:00:00.000+00:00",
    "gate": {"passed": True, "sha256": "ab" * 32},
    "signer": "cd" * 32,
}
RUN = {"base": {"ref": "Qwen/Qwen2.5-0.5B"}, "method": {"name": "lora", "r": 16}, "steps": 10, "tokens": 999,
       "data": {"train_sha256": "ef" * 32}, "device": "cuda", "versions": {"torch": "2.11"}}  # fmt: skip
GATE = {
    "passed": True,
    "checks": [{"expr": "task.exact_match >= base + 0.3", "value": 0.81, "passed": True},
               {"expr": "safety.unsafe_rate <= baseline + 0.05", "value": 0.02, "passed": True}],
    "results": {"task": {"exact_match": 0.81, "n": 100}, "safety": {"unsafe_rate": 0.02}},
}  # fmt: skip


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize(
    ("artifact", "method", "relation", "library"),
    [("adapter", "lora", "adapter", "peft"), ("adapter", "bitfit", "adapter", "lamina"),
     ("model", "full", "finetune", "transformers")],
)  # fmt: skip
def test_metadata_follows_the_method(artifact, method, relation, library):
    lineage = {**LINEAGE, "artifact": artifact, "parent": None}
    meta = _front(model_card.render(lineage, {**RUN, "method": {"name": method}}, GATE))
    assert (meta["base_model_relation"], meta["library_name"]) == (relation, library)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["datasets"] == ["ds-1"]
    assert meta["license"] == "cc-by-4.0"


def test_model_index_and_governance_section():
    text = model_card.render(LINEAGE, RUN, GATE)
    metrics = _front(text)["model-index"][0]["results"][0]["metrics"]
    assert [(m["type"], m["value"]) for m in metrics] == [
        ("task.exact_match", 0.81),
        ("safety.unsafe_rate", 0.02),
    ]
    governance = text.split("## Governance\n")[1]
    assert "  - helpdesk — licence: cc-by-4.0, lawful basis: consent" in governance
    assert "Gate verdict: passed (2/2 checks passed" in governance
    assert "Parent version: tickets/1" in governance
    assert f"by key sha256:{'cd' * 32}" in governance
    for section in ("## Intended use", "## Out-of-scope use", "## Limitations", "## Training details"):
        assert section in text
    assert "- Method: lora (r=16)" in text and "- Hardware: cuda" in text


def test_base_model_is_portable_never_a_local_path(tmp_path):
    """The card's base_model names what another machine can find: the parent version a later
    stage was trained from, a Hub id (from the ref, or from a local copy's config), or the
    offline tiny base, always pinned by the base's content hash."""
    files = {"files": {"model.safetensors": "aa" * 32}, "tokenizer_files": {"tokenizer.json": "bb" * 32}}
    later_stage = _front(model_card.render(LINEAGE, {**RUN, "base": {"ref": str(tmp_path), **files}}, GATE))
    assert later_stage["base_model"] == "tickets/1" and len(later_stage["base_model_sha256"]) == 64
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text('{"_name_or_path": "meta-llama/Llama-3.1-8B"}')
    copied = _front(model_card.render({**LINEAGE, "parent": None}, {**RUN, "base": {"ref": str(local), **files}}, GATE))
    assert copied["base_model"] == "meta-llama/Llama-3.1-8B" and str(tmp_path) not in yaml.safe_dump(copied)
    (local / "config.json").write_text("{}")
    unknown = _front(model_card.render({**LINEAGE, "parent": None}, {**RUN, "base": {"ref": str(local), **files}}, GATE))
    assert "base_model" not in unknown and unknown["base_model_sha256"] == copied["base_model_sha256"]
    tiny = _front(model_card.render({**LINEAGE, "parent": None}, {**RUN, "base": {"ref": "tiny", **files}}, GATE))
    assert tiny["base_model"] == "lamina/tiny"


def test_licences_of_several_sources_are_all_named():
    lineage = {**LINEAGE, "licence": None, "sources": [{"name": "a", "licence": "MIT"}, {"name": "b", "licence": "cc-by-4.0"}]}
    meta = _front(model_card.render(lineage, RUN, GATE))
    assert (meta["license"], meta["license_name"]) == ("other", "cc-by-4.0 AND mit")
