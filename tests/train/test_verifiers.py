"""The shipped verifiers: each check on replies whose right score is known by reading them."""

from __future__ import annotations

import pytest

from lamina.train import verifiers as v


def test_exact_answer_normalises_case_space_punctuation_and_numbers():
    assert v.exact_answer("  The Answer is: 1,000.50. ", "1000.5") == 1.0
    assert v.exact_answer("Paris!", "paris") == 1.0
    assert v.exact_answer("so \\boxed{42} it is", "42.0") == 1.0
    assert v.exact_answer("answer: Lyon", "Paris") == 0.0
    assert v.exact_answer("4 2", "42") == 0.0
    assert v.normalise("  “ＡＢＣ”  ") != "abc"  # curly quotes are content, NFKC folds only the width
    assert v.normalise("ＡＢＣ") == "abc"


def test_format_check_matches_the_whole_reply():
    pattern = r"TEAM: \w+; ISSUE: \w+; PRIORITY: \w+"
    assert v.matches_format(" TEAM: billing; ISSUE: refund; PRIORITY: high\n", pattern) == 1.0
    assert v.matches_format("Note: TEAM: billing; ISSUE: refund; PRIORITY: high", pattern) == 0.0


def test_json_validity_with_and_without_a_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert v.json_valid('{"n": 3}', schema) == 1.0
    assert v.json_valid('```json\n{"n": 3}\n```', schema) == 1.0
    assert v.json_valid('{"n": "3"}', schema) == 0.0
    assert v.json_valid('{"m": 3}', schema) == 0.0
    assert v.json_valid("{n: 3}") == 0.0
    assert v.json_valid("[1, 2]") == 1.0
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        v.json_valid("{}", {"type": "no-such-type"})


def test_arithmetic_evaluates_only_numbers_and_operators_within_bounds():
    assert v.evaluate_arithmetic("2 + 3 * (4 - 1) ** 2 / 3") == pytest.approx(11.0)
    assert v.evaluate_arithmetic("-2^3 × 2") == -16.0  # ^ and × accepted as ** and *
    for bad, why in [
        ("__import__('os')", "not allowed"),
        ("x + 1", "not allowed"),
        ("2 ** 1000", "exponent"),
        ("10 ** 20", "exceeds"),
        ("(10 ** 10) * (10 ** 10)", "exceeds"),
        ("1 / (3 - 3)", "division by zero"),
        ("1 +", "not an expression"),
        ("1" * 201, "longer than"),
        ("True + 1", "not allowed"),
        ("(-8) ** 0.5", "negative"),
    ]:
        with pytest.raises(v.NotArithmetic, match=why):
            v.evaluate_arithmetic(bad)
    assert v.arithmetic_answer("so the result is 12.", "3 * 4") == 1.0
    assert v.arithmetic_answer("Answer: 1,250", "1000 + 250") == 1.0
    assert v.arithmetic_answer("12 or maybe 13", "3 * 4") == 0.0
    assert v.arithmetic_reward([None] * 3, ["7", "8", "9"], ["3 + 4", "2 ** 3", "1 / 0"]) == [1.0, 1.0, 0.0]


def test_ticket_triage_gives_field_and_format_credit():
    ref = "TEAM: warehouse; ISSUE: broken; PRIORITY: high"
    assert v.ticket_triage(ref, ref) == pytest.approx(1.0)
    # every field right, none in the answer's form: 3/6
    assert v.ticket_triage("TEAM warehouse, ISSUE broken, PRIORITY high.", ref) == pytest.approx(0.5)
    # a preamble costs 0.2
    assert v.ticket_triage("Note:\nTEAM: warehouse; ISSUE: broken; PRIORITY: high", ref) == pytest.approx(0.8)
    # two fields right and in form, the third wrong: 2/6 + 2/6
    assert v.ticket_triage("TEAM: warehouse; ISSUE: broken; PRIORITY: normal", ref) == pytest.approx(4 / 6)
    # in form but a wrong value earns nothing for that field
    assert v.ticket_triage("TEAM: billing; ISSUE: broken; PRIORITY: normal", ref) == pytest.approx(2 / 6)
    assert v.ticket_triage(ref + " thanks", ref) == pytest.approx(5 / 6)  # the last field must end the reply
    assert v.ticket_triage("no idea", ref) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="not a ticket answer"):
        v.ticket_triage(ref, "warehouse")
    assert v.exact_answer_reward([None, None], ["Paris", "x"], ["paris", None]) == [1.0, 0.0]
    assert v.json_reward([None], ['{"a": 1}']) == [1.0]
