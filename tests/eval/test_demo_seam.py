"""The demo's evaluation seam on the real embedded tiny base (slow: builds the base)."""

from __future__ import annotations

import pytest

from lamina.fsio import read_json


@pytest.mark.slow
def test_demo_eval_on_the_tiny_base(tmp_path):
    from lamina.data import synthetic
    from lamina.eval.harness import DEMO_GATES, demo_eval
    from lamina.models.tiny import ensure_tiny_base
    from lamina.recipe import parse_recipe
    from lamina.train.runner import train

    base = ensure_tiny_base(progress=False)
    train_recs, eval_recs = synthetic.task_splits(400, 60)
    synthetic.write_jsonl(tmp_path / "train.jsonl", train_recs)
    synthetic.write_jsonl(tmp_path / "eval.jsonl", eval_recs)
    recipe = parse_recipe(
        {
            "name": "tickets",
            "model": {"base": str(base)},
            "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl")},
            "method": {"name": "lora", "r": 16},
            "train": {"steps": 20, "tokens_per_step": 4096, "lr": 3e-3},
        }
    )
    run = train(recipe, progress=False)
    result = demo_eval(run, base)
    assert [c["expr"] for c in result["checks"]] == DEMO_GATES
    assert result["passed"] == all(c["passed"] for c in result["checks"])
    gate = read_json(result["gate"])
    assert gate["passed"] is result["passed"] and gate["candidate"]["run_id"] == run.name
    assert set(result["results"]) == {"candidate", "base"}
    assert set(result["results"]["candidate"]) == {"task", "safety", "privacy", "efficiency"}
    assert result["results"]["candidate"]["task"]["n"] == 60
    html = (run / "eval" / "report.html").read_text()
    assert ("Gate verdict: PASSED" if result["passed"] else "Gate verdict: FAILED") in html
