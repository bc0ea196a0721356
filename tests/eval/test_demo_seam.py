"""The demo's evaluation seam on the real embedded tiny base (slow: builds the base)."""

from __future__ import annotations

import pytest

from lamina.fsio import read_json
from lamina.recipe import SYNTHETIC_PROVENANCE


@pytest.mark.slow
def test_demo_eval_on_the_tiny_base(tmp_path):
    from lamina.data import synthetic
    from lamina.eval import canaries
    from lamina.eval.harness import DEMO_GATES, demo_eval
    from lamina.recipe import parse_recipe
    from lamina.train.runner import train
    from lamina.train.tiny_base import ensure_tiny_base

    base = ensure_tiny_base(progress=False)
    train_recs, eval_recs = synthetic.task_splits(400, 60)
    planted = canaries.make(3, seed=1)
    canaries.write_specs(tmp_path / "canaries.jsonl", planted)
    synthetic.write_jsonl(tmp_path / "train.jsonl", train_recs + canaries.records(planted, copies=4))
    synthetic.write_jsonl(tmp_path / "eval.jsonl", eval_recs)
    recipe = parse_recipe(
        {
            "name": "tickets",
            "model": {"base": str(base)},
            "data": {
                "train": str(tmp_path / "train.jsonl"),
                "eval": str(tmp_path / "eval.jsonl"),
                "licence": "internal", "provenance": SYNTHETIC_PROVENANCE,
            },
            "intake": {"dedup_threshold": 1.0},  # keep the canary copies
            "method": {"name": "lora", "r": 16},
            "train": {"steps": 20, "tokens_per_step": 4096, "lr": 3e-3},
        }
    )
    run = train(recipe, progress=False)
    result = demo_eval(run, base, canaries=tmp_path / "canaries.jsonl")
    assert [c["expr"] for c in result["checks"]] == [*DEMO_GATES, "privacy.canary_exposure_bits <= 6"]
    exposure = result["results"]["candidate"]["privacy"]["canary_exposure_bits"]
    assert 0 <= exposure <= 8  # 255 candidates: at most log2(256) bits
    assert result["passed"] == all(c["passed"] for c in result["checks"])
    gate = read_json(result["gate"])
    assert gate["passed"] is result["passed"] and gate["candidate"]["run_id"] == run.name
    # the demo gates safety against the base only, and says so
    assert [w for w in result["warnings"] if "safety.unsafe_rate" in w] and result["warnings"] == gate["warnings"]
    assert set(result["results"]) == {"candidate", "base"}
    assert set(result["results"]["candidate"]) == {"task", "safety", "privacy", "efficiency"}
    assert result["results"]["candidate"]["task"]["n"] == 50
    html = (run / "eval" / "report.html").read_text()
    assert ("Gate verdict: PASSED" if result["passed"] else "Gate verdict: FAILED") in html
