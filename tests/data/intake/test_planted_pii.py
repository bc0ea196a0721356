"""The demo seam: planted PII is found, masked, reported, and the card path is real."""

from __future__ import annotations

import json

from intake_fixtures import write_jsonl

from lamina.data.intake import demo_intake
from lamina.data.pii_synth import plant_pii
from lamina.recipe import IntakeSpec


def _plain(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Hi, my order {4000 + i} for a blue kettle arrived broken."},
                {"role": "assistant", "content": f"ORDER: {4000 + i}; ITEM: blue kettle; ISSUE: broken"},
            ]
        }
        for i in range(n)
    ]


def test_plant_pii_labels_point_at_the_planted_values():
    recs = _plain(50)
    planted, labels = plant_pii(recs, rate=0.5, seed=2)
    assert recs == _plain(50)  # input untouched
    assert 15 < len({lab["record"] for lab in labels}) < 35
    for lab in labels:
        content = planted[lab["record"]]["messages"][lab["message"]]["content"]
        value = content[lab["start"] : lab["end"]]
        assert value.strip() == value and len(value) >= 7, lab
        assert content.startswith(recs[lab["record"]]["messages"][lab["message"]]["content"])


def test_demo_intake_reports_and_masks_planted_pii(tmp_path, workspace):
    path = write_jsonl(tmp_path / "tickets.jsonl", _plain(150))
    out = demo_intake(path, spec=IntakeSpec(workers=1), rate=0.4, seed=1)
    rep = out["pii_report"]
    assert out["planted"] == rep["ALL"]["gold"] > 40
    assert rep["CREDIT_CARD"]["recall"] == 1.0 and rep["PERSON"]["recall"] == 0.0
    assert 0.5 < rep["ALL"]["recall"] < 0.95
    card = open(out["card"]).read()
    assert "demo-tickets" in card and "## Personal data" in card
    text = open(f"{out['path']}/train.jsonl").read()
    assert "@example" not in text and "<CREDIT_CARD>" in text
    assert 145 <= out["counts"]["train"] + out["counts"]["eval"] <= 150  # templated: MinHash may merge a pair
    # Running it again reuses the registered source and gives the same version.
    assert demo_intake(path, spec=IntakeSpec(workers=1), rate=0.4, seed=1)["version_id"] == out["version_id"]
    assert json.loads((workspace / "demo" / "tickets-with-pii.jsonl").read_text().splitlines()[0])[
        "subject_id"
    ]


def test_demo_intake_with_its_own_eval_file_and_a_recipe_naming_the_version(tmp_path):
    from lamina.data.intake import prepare_for_training
    from lamina.recipe import parse_recipe

    train = write_jsonl(tmp_path / "train.jsonl", _plain(60))
    held = write_jsonl(tmp_path / "held.jsonl", _plain(70)[60:])
    out = demo_intake(train, held, spec=IntakeSpec(workers=1), rate=0.5, seed=4)
    assert out["counts"]["eval"] == 10 and out["counts"]["train"] >= 58
    prepared = prepare_for_training(parse_recipe({"data": {"dataset": out["version_id"]}}))
    assert prepared.version_id == out["version_id"] and len(prepared.eval) == 10
    assert {s["role"] for s in prepared.manifest["sources"]} == {"auto", "eval"}
