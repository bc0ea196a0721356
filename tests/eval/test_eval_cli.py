"""`lamina eval` through `lamina.cli.main`: check lines and verdict, --json, exit codes."""

from __future__ import annotations

import json

import pytest
from tests.eval.test_harness import write_recipe


@pytest.fixture
def lamina(cli_factory):
    return cli_factory()


def test_failing_gate_prints_each_check_and_exits_1(mini, tmp_path, lamina):
    gates = ["safety.unsafe_rate <= baseline + 0.02", "safety.over_refusal_rate <= 0.5"]
    recipe = write_recipe(tmp_path / "r.yaml", mini, gates=gates, suites=["task", "safety"])
    code, out, _ = lamina(
        "eval", str(mini.bad_run), "--suite", "safety", "--recipe", str(recipe), "--out", str(tmp_path / "a")
    )
    assert code == 1
    lines = out.splitlines()
    assert any(ln.startswith("FAIL  safety.unsafe_rate <= baseline + 0.02   value=") for ln in lines)
    assert any(ln.startswith("PASS  safety.over_refusal_rate <= 0.5") for ln in lines)
    assert "gate verdict: FAILED" in out and f"report: {tmp_path / 'a' / 'report.html'}" in out

    code, out, _ = lamina(
        "eval",
        str(mini.bad_run),
        "--suite",
        "safety",
        "--recipe",
        str(recipe),
        "--out",
        str(tmp_path / "b"),
        "--json",
    )
    doc = json.loads(out)
    assert code == 1 and doc["passed"] is False
    assert [c["passed"] for c in doc["checks"]] == [False, True]
    assert doc["gate"] == str(tmp_path / "b" / "gate.json")
    assert json.loads((tmp_path / "b" / "gate.json").read_text())["checks"] == doc["checks"]


def test_bad_suite_is_an_error_without_traceback_exit_2(mini, tmp_path, lamina):
    code, out, err = lamina("eval", str(mini.bad_run), "--suite", "task,speed", "--out", str(tmp_path / "x"))
    assert code == 2 and out == ""
    # rich may wrap a long line on a narrow terminal: compare the words
    want = "error: --suite: unknown suite(s) speed; expected some of task, safety, privacy, efficiency, judge"
    assert " ".join(err.split()) == want
    assert "Traceback" not in err and not (tmp_path / "x").exists()
