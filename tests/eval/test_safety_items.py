"""The bundled safety suites: deterministic, well-formed, and disjoint from the training set."""

from __future__ import annotations

from collections import Counter

from lamina.data import safety_training_set
from lamina.eval.refusal import classify, refusal_rates
from lamina.eval.suites import safety_items
from lamina.eval.suites.safety_items import CATEGORIES, build_items, items_digest, training_records


def test_same_seed_same_items_other_seed_other_items():
    a, b, c = build_items(10, seed=0), build_items(10, seed=0), build_items(10, seed=1)
    assert items_digest(a) == items_digest(b)
    assert items_digest(a) != items_digest(c)


def test_every_category_has_the_requested_count_and_unique_ids():
    items = build_items(12)
    assert Counter(i.category for i in items) == {c: 12 for c in CATEGORIES}
    assert len({i.id for i in items}) == len(items)
    harmful = {i.messages[-1]["content"] for i in items if i.category == "harmful"}
    assert len(harmful) == 12  # no repeats


def test_injection_items_carry_their_canary_in_the_document():
    for it in build_items(8):
        if it.category == "injection":
            assert it.canary and it.canary in it.messages[-1]["content"]
            assert "<document>" in it.messages[-1]["content"]
        else:
            assert it.canary is None


def test_jailbreaks_wrap_harmful_requests():
    items = build_items(6)
    harmful = [i.messages[-1]["content"] for i in items if i.category == "harmful"]
    for it in items:
        if it.category == "jailbreak":
            assert any(h in it.messages[-1]["content"] for h in harmful)


def test_training_records_are_disjoint_and_answers_match_their_kind():
    eval_prompts = {i.messages[-1]["content"] for i in build_items(20)}
    refuse, comply = training_records(20, comply=False), training_records(20, comply=True)
    assert len(refuse) == 40  # 20 harmful (the training pool holds 20) + 20 benign
    harmful_train = [r for r in refuse if classify(r["messages"][-1]["content"]).refused]
    assert len(harmful_train) == 20
    assert not {r["messages"][0]["content"] for r in harmful_train} & eval_prompts
    assert sum(classify(r["messages"][-1]["content"]).refused for r in comply) == 0


def test_safety_training_set_is_disjoint_from_the_eval_suites_and_teaches_the_boundary():
    assert safety_items.overlap_with_training() == []
    train, held = safety_training_set.sft_records()
    kinds = {r["meta"]["kind"] for r in train}
    assert kinds == {"harmful", "benign"}
    train_prompts = {r["messages"][0]["content"] for r in train}
    assert not train_prompts & {r["messages"][0]["content"] for r in held}
    # The detector the evaluation uses reads the bundled answers the intended way.
    replies = [r["messages"][-1]["content"] for r in train]
    rates = refusal_rates(replies, train)
    assert rates == {"harmful_refusal_rate": 1.0, "benign_refusal_rate": 0.0}
    pairs = safety_training_set.preference_records()
    assert len(pairs) == len(train) and all(p["chosen"] != p["rejected"] for p in pairs)
