"""The recipe's intake section and data seam: defaults, key-naming errors, relative paths."""

from __future__ import annotations

import pytest

from lamina.errors import LaminaError
from lamina.recipe import load_recipe, parse_recipe


def test_defaults_live_in_the_recipe():
    r = parse_recipe({"data": {"dataset": "support"}})
    assert r.intake.pii.operator == "placeholder" and r.intake.eval_ratio == 0.1
    assert "US_SSN" in r.intake.pii.entities and "internal" in r.intake.licences


@pytest.mark.parametrize(
    "data, key",
    [
        ({"data": {}}, "recipe: data: Value error, name exactly one of"),
        ({"data": {"train": "a", "dataset": "b"}}, "recipe: data: Value error, name exactly one of"),
        (
            {"data": {"dataset": "b", "eval": "e.jsonl"}},
            "recipe: data: Value error, `eval`, `licence` and `provenance` describe raw",
        ),
        (
            {"data": {"dataset": "b", "licence": "mit"}},
            "recipe: data: Value error, `eval`, `licence` and `provenance` describe raw",
        ),
        (
            {"data": {"dataset": "b"}, "intake": {"pii": {"custom": [{"entity": "X", "regex": "("}]}}},
            "intake.pii.custom.0.regex",
        ),
        (
            {"data": {"dataset": "b"}, "intake": {"pii": {"custom": [{"entity": "lower", "regex": "x"}]}}},
            "intake.pii.custom.0.entity",
        ),
        ({"data": {"dataset": "b"}, "intake": {"dedup_threshold": 0}}, "intake.dedup_threshold"),
        (
            {"data": {"dataset": "b"}, "intake": {"pii": {"operatr": "mask"}}},
            "intake.pii.operatr: unknown key",
        ),
    ],
)
def test_bad_intake_settings_name_the_key(data, key):
    with pytest.raises(LaminaError, match=key.replace(".", r"\.")):
        parse_recipe(data)


def test_contamination_eval_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    recipe = tmp_path / "sub" / "r.yaml"
    recipe.write_text("data: {dataset: x}\nintake: {contamination_eval: [bench.jsonl, /abs/e.jsonl]}\n")
    assert load_recipe(recipe).intake.contamination_eval == [
        str(tmp_path / "sub" / "bench.jsonl"),
        "/abs/e.jsonl",
    ]
