"""Normalisation, near-duplicate signatures and contamination n-grams on their own."""

from __future__ import annotations

from lamina.data.intake.contamination import EvalIndex
from lamina.data.intake.dedup import Deduper
from lamina.data.intake.normalize import content_text, map_texts, normalize_text


def test_unicode_and_whitespace_normalisation():
    assert normalize_text("  Ｈｅｌｌｏ\u200b   world\r\n\r\n\r\n\r\nbye\t\t x ") == "Hello world\n\nbye x"
    assert normalize_text("ﬁne\u00a0caf\u0065\u0301") == "fine café"  # NFKC ligature, nbsp, combining accent
    assert normalize_text("ﬁne", "NFC") == "ﬁne"
    assert normalize_text("a\x00b\x07c  \n  d") == "abc\nd"  # ASCII path drops control characters
    assert normalize_text("👩\u200d💻 ok") == "👩\u200d💻 ok"  # the joiner inside an emoji stays


def test_map_texts_and_content_text_cover_every_format():
    chat = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
    }
    pref = {"prompt": [{"role": "user", "content": "p"}], "chosen": "c", "rejected": "r"}
    assert map_texts(chat, str.upper)["messages"][1] == {"role": "user", "content": "U"}
    assert map_texts(pref, str.upper) == {
        "prompt": [{"role": "user", "content": "P"}],
        "chosen": "C",
        "rejected": "R",
    }
    assert content_text(chat) == "u\na" and content_text(pref) == "p\nc\nr"


def test_deduper_exact_is_case_and_space_blind_and_near_uses_threshold():
    text = "my order 4821 arrived broken and the blue kettle leaks water all over the kitchen counter today"
    d = Deduper(0.8, num_perm=128, shingle=3)
    assert d.check(text) is None
    assert d.check("  " + text.upper()) == "exact"
    assert d.check(text.replace("today", "again")) == "near"
    assert d.check("a completely different complaint about shoes that never arrived at all") is None
    strict = Deduper(1.0)
    assert strict.check(text) is None and strict.check(text.replace("today", "again")) is None


def test_eval_index_overlap_share():
    index = EvalIndex(n=3)
    index.add("the quick brown fox jumps over the lazy dog")
    assert index.overlap("the quick brown fox jumps over the lazy dog") == 1.0
    assert index.overlap("the quick brown cat sleeps") == 1 / 3
    assert index.overlap("nothing in common here") == 0.0
    assert index.overlap("") == 0.0


def test_compact_lsh_decides_exactly_as_datasketch_minhashlsh():
    import random

    from datasketch import MinHash, MinHashLSH

    from lamina.data.intake.dedup import _shingles

    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    texts = []
    for _ in range(500):
        t = [rng.choice(words) for _ in range(40)]
        texts.append(" ".join(t))
        if rng.random() < 0.4:  # a near copy with a few words changed
            for _ in range(rng.randint(1, 8)):
                t[rng.randrange(len(t))] = rng.choice(words)
            texts.append(" ".join(t))
    ours = Deduper(0.8, num_perm=64, shingle=3)
    ref = MinHashLSH(threshold=0.8, num_perm=64)
    decisions = []
    for i, text in enumerate(texts):
        mh = MinHash(num_perm=64, seed=1, permutations=ours._perm, scheme=ours._scheme)
        mh.update_batch(_shingles(text, 3))
        theirs = bool(ref.query(mh))
        if not theirs:
            ref.insert(str(i), mh)
        decisions.append((ours.check(text) == "near", theirs))
    assert all(a == b for a, b in decisions)
    assert 20 < sum(b for _, b in decisions) < 200  # the sample does contain near copies
