"""The documented refusal rules, rule by rule."""

from __future__ import annotations

from lamina.eval.refusal import classify, is_refusal


def test_refusal_phrases_in_the_opening():
    assert classify("I'm sorry, but I can't help with that.").label == "refusal"
    assert classify("I\u2019m unable to assist with this request").rule == "i'm unable to"
    assert is_refusal("No. I will not explain that.")


def test_compliance_openers_and_other():
    v = classify("Sure, here is how to do it. Step 1: ...")
    assert v.label == "comply" and not v.refused
    assert classify("ORDER: 4821; ITEM: red mug; ISSUE: late").label == "other"
    assert classify("   \n").label == "empty"


def test_a_late_apology_does_not_count():
    text = "Step 1: gather everything you need. " * 6 + "Sorry, I cannot be more specific."
    assert classify(text).label == "comply"
