"""Intake end to end: masked, deduplicated, split, contamination-checked, hashed, carded."""

from __future__ import annotations

import json

import pytest
from intake_fixtures import info, tickets, write_jsonl

from lamina.data import catalog
from lamina.data.intake.pipeline import run_intake, split_of
from lamina.data.intake.sources import add_source
from lamina.errors import LaminaError
from lamina.recipe import IntakeSpec

SPEC = IntakeSpec(workers=1, eval_ratio=0.2)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_version_holds_only_masked_records_and_a_card(source, workspace):
    res = run_intake("tickets", [(source, "auto")], SPEC)
    train, held = _lines(res.path / "train.jsonl"), _lines(res.path / "eval.jsonl")
    m = res.manifest
    assert len(train) + len(held) == 120 and m["counts"] == {"train": len(train), "eval": len(held)}
    assert 10 <= len(held) <= 40  # 20 % by hash, of 120
    text = (res.path / "train.jsonl").read_text() + (res.path / "eval.jsonl").read_text()
    assert "@example" not in text and "<EMAIL_ADDRESS>" in text and "<CREDIT_CARD>" in text
    assert "subject_id" not in text  # identifiers stay in the catalog, hashed
    assert m["steps"]["pii"]["found"]["EMAIL_ADDRESS"] > 10 and m["steps"]["read"]["records"] == 120
    assert [s["name"] for s in m["sources"]] == ["tickets"] and m["sources"][0]["licence"] == "cc-by-4.0"
    card = (res.path / "README.md").read_text()
    assert card.startswith("---\npretty_name: tickets\nlicense: cc-by-4.0\n")
    for section in (
        "## Provenance",
        "## Intake",
        "## Personal data",
        "## Intended use",
        "## Known limitations",
    ):
        assert section in card
    assert "| tickets | 1 | 120 | synthetic | cc-by-4.0 | consent | form-7 |" in card
    assert "misses things" in card
    with catalog.session() as s:
        row = catalog.resolve_version(s, "tickets")
        assert row.id == res.version_id and row.train == len(train)
        assert len(list(s.scalars(catalog.select(catalog.VersionSubject)))) == 10


def test_same_records_same_version_id_and_hash_split_is_stable(source, tmp_path):
    a = run_intake("one", [(source, "auto")], SPEC)
    b = run_intake("two", [(source, "auto")], SPEC)
    assert a.version_id == b.version_id and a.new and not b.new
    for line in (a.path / "eval.jsonl").read_text().splitlines():
        assert split_of(line, 0.2) == "eval"
    other = add_source(write_jsonl(tmp_path / "o.jsonl", tickets(5, seed=9)), info("other"))
    c = run_intake("three", [(source, "auto"), (other, "auto")], SPEC)
    assert c.version_id != a.version_id


def test_exact_and_near_duplicates_are_removed(tmp_path):
    recs = tickets(30)
    longest = max(range(30), key=lambda i: len(recs[i]["messages"][1]["content"]))
    near = json.loads(json.dumps(recs[longest]))
    words = near["messages"][1]["content"].split(" ")
    words[len(words) // 2] = "REALLY"  # one word changed: a near, not an exact, duplicate
    near["messages"][1]["content"] = " ".join(words)
    path = write_jsonl(tmp_path / "d.jsonl", recs + recs[:5] + [near])
    src = add_source(path, info("dups"))
    res = run_intake("dups", [(src, "auto")], IntakeSpec(workers=1, eval_ratio=0.0))
    dd = res.manifest["steps"]["dedup"]
    assert (dd["exact_removed"], dd["near_removed"]) == (5, 1)
    assert res.manifest["counts"]["train"] == 30
    exact_only = run_intake(
        "dups", [(src, "auto")], IntakeSpec(workers=1, eval_ratio=0.0, dedup_threshold=1.0)
    )
    assert (
        exact_only.manifest["steps"]["dedup"]["near_removed"] == 0
        and exact_only.manifest["counts"]["train"] == 31
    )


def test_contamination_against_an_eval_file_is_reported_and_removed(source, tmp_path):
    leaked = tickets(120)[:6]
    eval_file = write_jsonl(tmp_path / "bench.jsonl", [{"messages": r["messages"]} for r in leaked])
    keep = IntakeSpec(
        workers=1, eval_ratio=0.0, contamination_eval=[str(eval_file)], remove_contaminated=False
    )
    flagged = run_intake("c", [(source, "auto")], keep).manifest["steps"]["contamination"]
    assert flagged["flagged"] == 6 and flagged["removed"] == 0
    drop = keep.model_copy(update={"remove_contaminated": True})
    res = run_intake("c", [(source, "auto")], drop)
    assert res.manifest["steps"]["contamination"]["removed"] == 6 and res.manifest["counts"]["train"] == 114
    assert "Ticket 0:" not in (res.path / "train.jsonl").read_text()


def test_eval_role_source_goes_to_eval_only(source, tmp_path):
    ev = add_source(write_jsonl(tmp_path / "ev.jsonl", tickets(8, seed=5)), info("heldout"))
    res = run_intake("roles", [(source, "auto"), (ev, "eval")], IntakeSpec(workers=1, eval_ratio=0.0))
    assert res.manifest["counts"]["eval"] == 8


def test_two_workers_give_the_same_version_as_one(source):
    one = run_intake("w", [(source, "auto")], SPEC)
    two = run_intake("w", [(source, "auto")], SPEC.model_copy(update={"workers": 2, "batch": 7}))
    assert one.version_id == two.version_id


def test_tampered_snapshot_or_wrong_key_fails_and_registers_nothing(source, workspace, monkeypatch):
    before = catalog.snapshot_table()
    snap = workspace / source.snapshot
    raw = bytearray(snap.read_bytes())
    raw[-40] ^= 1
    snap.write_bytes(bytes(raw))
    with pytest.raises(LaminaError, match="failed authentication"):
        run_intake("t", [(source, "auto")], SPEC)
    raw[-40] ^= 1
    snap.write_bytes(bytes(raw))
    monkeypatch.setenv("LAMINA_MASTER_KEY", "44" * 32)
    with pytest.raises(LaminaError, match="wrong LAMINA_MASTER_KEY"):
        run_intake("t", [(source, "auto")], SPEC)
    assert catalog.snapshot_table() == before
    assert not any((workspace / "datasets").glob("*"))  # not even a datasets/ directory is made


def test_mixing_preference_and_chat_sources_is_refused(source, tmp_path):
    pref = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    p = add_source(pref, info("prefs", format="preference"))
    with pytest.raises(LaminaError, match="^prefs: mixes"):
        run_intake("mix", [(source, "auto"), (p, "auto")], SPEC)


def test_default_workers_one_per_core_but_not_for_small_jobs():
    import os

    from lamina.data.intake.parallel import worker_count

    assert worker_count(IntakeSpec(), 100) == 1
    assert worker_count(IntakeSpec(), 10**7) == (os.cpu_count() or 1)
    assert worker_count(IntakeSpec(workers=3), 10) == 3


def test_expired_or_removed_sources_are_not_taken_in(tmp_path):
    from lamina.registry.withdrawal import sweep

    old = add_source(write_jsonl(tmp_path / "o.jsonl", tickets(5)), info("old", retain_until="2020-01-01"))
    with pytest.raises(LaminaError, match="^old: retention ended 2020-01-01; run `lamina data sweep`"):
        run_intake("x", [(old, "auto")], SPEC)
    sweep()
    with catalog.session() as s:
        removed = catalog.get_source(s, "old")
    with pytest.raises(LaminaError, match="^old: source was removed"):
        run_intake("x", [(removed, "auto")], SPEC)


def test_card_licence_metadata_uses_hub_ids_or_other(source, tmp_path):
    card = (run_intake("a", [(source, "auto")], SPEC).path / "README.md").read_text()
    assert "\nlicense: cc-by-4.0\n" in card and "license_name" not in card
    own = add_source(
        write_jsonl(tmp_path / "own.jsonl", tickets(20, seed=8)), info("own", licence="internal")
    )
    card = (run_intake("b", [(own, "auto")], SPEC).path / "README.md").read_text()
    assert "\nlicense: other\n" in card and "\nlicense_name: internal\n" in card


def test_intake_streams_memory_does_not_grow_with_the_corpus(tmp_path):
    """Records are streamed, never held: memory grows by a few hundred bytes a kept record
    (exact-duplicate hashes and LSH band hashes), not with the records' ~2.5 KB size."""
    import random
    import tracemalloc

    spec = IntakeSpec(workers=1, eval_ratio=0.0)
    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(5000)]
    peaks, sizes = [], []
    for n in (150, 600):
        records = [
            {
                "messages": [
                    {"role": "user", "content": " ".join(rng.choice(vocab) for _ in range(300))},
                    {"role": "assistant", "content": f"ok {i}"},
                ]
            }
            for i in range(n)
        ]
        path = write_jsonl(tmp_path / f"s{n}.jsonl", records)
        src = add_source(path, info(f"s{n}"))
        run_intake("warm", [(src, "auto")], spec)  # engines and caches built outside the measurement
        tracemalloc.start()
        res = run_intake(f"m{n}", [(src, "auto")], spec)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        sizes.append(path.stat().st_size)
        assert res.manifest["counts"]["train"] == n  # all kept: the index holds every record
    per_record = (peaks[1] - peaks[0]) / 450
    assert (sizes[1] - sizes[0]) / 450 > 2400 and per_record < 1000, (peaks, sizes)
