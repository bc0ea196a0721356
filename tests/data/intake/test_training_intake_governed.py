"""What training takes in goes through the same gate as `lamina data add`: the `data.write`
permission and one audit entry per source and version; and an eval record that also sits in
the training file leaves train, not the held-out set."""

from __future__ import annotations

import json

import pytest
from intake_fixtures import tickets, write_jsonl
from sqlalchemy import select

from killpoints import entries
from lamina.data import catalog
from lamina.data.intake import prepare_for_training
from lamina.errors import LaminaError
from lamina.governance import access
from lamina.recipe import SYNTHETIC_PROVENANCE, parse_recipe
from lamina.registry import coverage


def _recipe(train, held):
    return parse_recipe({
        "name": "bot", "model": {"base": "tiny"},
        "data": {"train": str(train), "eval": str(held), "licence": "cc-by-4.0", "provenance": SYNTHETIC_PROVENANCE},
        "intake": {"workers": 1},
    })  # fmt: skip


def test_training_takes_data_in_only_with_data_write_and_audits_it(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", tickets(30))
    held = write_jsonl(tmp_path / "eval.jsonl", tickets(6, seed=5))
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    access.grant("tess", "trainer")
    monkeypatch.setenv("LAMINA_USER", "tess")
    with pytest.raises(LaminaError, match="lacks permission 'data.write'"):
        prepare_for_training(_recipe(train, held))
    with catalog.session() as s:
        assert list(s.scalars(select(catalog.Source))) == []
    assert entries("denied")[-1] == {"permission": "data.write", "kind": "role"}

    monkeypatch.setenv("LAMINA_USER", "admin")
    prepared = prepare_for_training(_recipe(train, held))
    with catalog.session() as s:
        names = sorted(src.name for src in s.scalars(select(catalog.Source)))
    assert sorted(d["source"] for d in entries("data.add")) == names and len(names) == 2
    assert [d["version"] for d in entries("data.intake")] == [prepared.version_id]
    assert coverage.check() == []


def test_an_eval_record_in_the_training_file_leaves_train_and_eval_stays_whole(tmp_path, monkeypatch):
    held_records = tickets(20, seed=9)
    train = write_jsonl(tmp_path / "train.jsonl", tickets(40) + held_records[:16])
    held = write_jsonl(tmp_path / "eval.jsonl", held_records)
    prepared = prepare_for_training(_recipe(train, held))
    assert len(prepared.eval) == 20
    assert len(prepared.train) == 40
    held_tickets = {json.dumps(r["messages"][1]) for r in prepared.eval}
    assert not any(json.dumps(r["messages"][1]) in held_tickets for r in prepared.train)
