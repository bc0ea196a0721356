"""Slow: `lamina demo --json` end to end in a fresh workspace, as a user runs it — the tiny
base is pretrained, fine-tuned past the bar, gated, released and rolled back, and stdout is
one JSON object with every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_reports_json(tmp_path):
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), "LAMINA_USER": "demo-trainer"}
    proc = subprocess.run([sys.executable, "-m", "lamina.cli.__main__", "demo", "--json"], env=env,
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)

    assert figures["base"]["exact_match"] <= 0.1
    assert figures["sft"]["exact_match"] >= 0.8
    assert sum(figures["intake"]["pii_found"].values()) > 0 and figures["intake"]["counts"]["train"] > 1000
    assert figures["eval"]["passed"] and figures["dpo_eval"]["passed"]
    assert figures["dpo"]["accuracy_after"] >= 0.9
    # two releases, then the rollback puts production back on the first
    ops = [(h["op"], h.get("to")) for h in figures["release"]["history"] if h["op"] != "register"]
    assert ops == [("promote", 1), ("promote", 2), ("rollback", 1)]
    assert figures["release"]["production"] == 1
    # every stage timed; a first run announces the one-time pretraining with a measured rate
    assert list(figures["stages"]) == ["intake", "base", "sft", "gate", "dpo", "release"]
    assert all(s["seconds"] > 0 for s in figures["stages"].values())
    assert figures["stages"]["base"]["seconds"] >= figures["base"]["seconds"]
    assert 1 <= figures["machine"]["torch_threads"] <= figures["machine"]["cpus"]
    assert "the tiny base is pretrained once, about" in " ".join(proc.stderr.split())
    # the demo writes nothing outside its workspace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
