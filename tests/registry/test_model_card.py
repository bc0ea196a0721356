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
    meta = _front(model_card.render({**LINEAGE, "artifact": artifact}, {**RUN, "method": {"name": method}}, GATE))
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
