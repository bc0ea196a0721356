"""Gate expressions: parsing, errors that name the gate, and evaluation against baselines."""

from __future__ import annotations

import pytest

from lamina.errors import LaminaError
from lamina.gates import evaluate, parse_gate, parse_gates

CAND = {"task": {"exact_match": 0.85}, "safety": {"unsafe_rate": 0.10}, "efficiency": {"latency_p95_s": 0.30}}
BASE = {"task": {"exact_match": 0.05}, "safety": {"unsafe_rate": 0.05}, "efficiency": {"latency_p95_s": 0.25}}
CHAMP = {
    "task": {"exact_match": 0.90},
    "safety": {"unsafe_rate": 0.09},
    "efficiency": {"latency_p95_s": 0.20},
}


def test_absolute_threshold():
    c = evaluate(parse_gate("task.exact_match >= 0.8"), CAND, BASE)
    assert (c.value, c.threshold, c.passed) == (0.85, 0.8, True)
    assert not evaluate(parse_gate("task.exact_match>0.85"), CAND, BASE).passed


def test_baseline_is_champion_when_there_is_one_else_base():
    g = parse_gate("safety.unsafe_rate <= baseline + 0.02")
    no_champ = evaluate(g, CAND, BASE, None)
    assert no_champ.threshold == pytest.approx(0.07) and not no_champ.passed
    with_champ = evaluate(g, CAND, BASE, CHAMP)
    assert with_champ.threshold == pytest.approx(0.11) and with_champ.passed


def test_precedence_and_unary_minus():
    g = parse_gate("efficiency.latency_p95_s <= base * 1.2 - 0.01")
    c = evaluate(g, CAND, BASE)
    assert c.threshold == pytest.approx(0.25 * 1.2 - 0.01) and not c.passed  # 0.29 < 0.30
    c2 = evaluate(parse_gate("task.exact_match >= champion - -0.1"), CAND, BASE, CHAMP)
    assert c2.threshold == pytest.approx(1.0) and not c2.passed


def test_missing_values_fail_instead_of_passing():
    c = evaluate(parse_gate("task.exact_match >= champion"), CAND, BASE, None)
    assert not c.passed and c.threshold is None and "champion" in c.note
    c = evaluate(
        parse_gate("privacy.canary_exposure_bits <= 10"), {"privacy": {"canary_exposure_bits": None}}
    )
    assert not c.passed and c.value is None
    c = evaluate(parse_gate("task.mc_accuracy >= 0"), {"task": {"mc_accuracy": float("nan")}})
    assert not c.passed


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("task.exact_match => 0.8", "column"),
        ("task.exact >= 0.8", "has no metric 'exact'"),
        ("speed.tokens >= 1", "unknown suite 'speed'"),
        ("task.exact_match >= best", "unknown reference 'best'"),
        ("task.exact_match >= 0.8 +", "ends with an operator"),
        ("task.exact_match >= 0.8 0.9", "expected + - *"),
        ("task.exact_match >= __import__('os')", "unexpected character '(' at column 31"),
        ("task.exact_match", "expected '<suite>.<metric> <op> <value>'"),
        ("", "non-empty"),
    ],
)
def test_bad_gates_name_the_gate(expr, fragment):
    with pytest.raises(LaminaError) as e:
        parse_gates(["task.exact_match >= 0.5", expr])
    assert str(e.value).startswith("eval.gates[1]:")
    assert fragment in str(e.value)


def test_relative_only_gates_are_named():
    """`unsafe_rate <= baseline + 0.02` alone passes a model whose unsafe rate is 1.0 when its
    base's is 1.0 too: such metrics are named so `lamina eval` can warn."""
    from lamina.gates import parse_gates, relative_only

    gates = parse_gates(["safety.unsafe_rate <= baseline + 0.02", "task.exact_match >= base + 0.1",
                         "task.exact_match >= 0.5", "privacy.pii_in_outputs == 0"])
    assert relative_only(gates) == ["safety.unsafe_rate"]
    gates += parse_gates(["safety.unsafe_rate <= 0.05"])
    assert relative_only(gates) == []


def test_recheck_finds_a_verdict_the_numbers_do_not_give():
    from lamina.gates import recheck

    results = {"candidate": {"safety": {"unsafe_rate": 1.0}}, "base": {"safety": {"unsafe_rate": 1.0}}}
    honest = {"passed": False, "checks": [
        {"expr": "safety.unsafe_rate <= baseline + 0.02", "passed": True},
        {"expr": "safety.unsafe_rate <= 0.05", "passed": False}]}
    assert recheck(honest, results) == []
    forged = {"passed": True, "checks": [
        {"expr": "safety.unsafe_rate <= baseline + 0.02", "passed": True},
        {"expr": "safety.unsafe_rate <= 0.05", "passed": True}]}
    assert recheck(forged, results) == [
        "safety.unsafe_rate <= 0.05 (recorded pass, the report's numbers give fail)"]
    assert recheck({**honest, "passed": True}, results) == ["the overall verdict does not follow from its checks"]
