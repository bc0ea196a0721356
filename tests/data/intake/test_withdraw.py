"""Withdrawal and retention: the subject's records leave every source and version, and
the runs trained on them are listed and marked."""

from __future__ import annotations

import datetime as dt
import json

from intake_fixtures import info, tickets, write_jsonl

from lamina import fsio
from lamina.data import catalog
from lamina.data.intake.pipeline import run_intake
from lamina.data.intake.sources import add_source, iter_source_records
from lamina.recipe import IntakeSpec
from lamina.registry.withdrawal import forget_subject, sweep

SPEC = IntakeSpec(workers=1, eval_ratio=0.2)


def _fake_run(workspace, name: str, version: str) -> None:
    fsio.write_json(
        workspace / "runs" / name / "run.json", {"id": name, "data": {"dataset_version": version}}
    )


def _answers(path) -> set[str]:
    out = set()
    for split in ("train", "eval"):
        for line in (path / f"{split}.jsonl").read_text().splitlines():
            out.add(json.loads(line)["messages"][-1]["content"])
    return out


def test_forget_removes_subject_everywhere_and_lists_runs(source, workspace):
    v1 = run_intake("tickets", [(source, "auto")], SPEC)
    _fake_run(workspace, "run-a", v1.version_id)
    _fake_run(workspace, "run-b", "some-other-version")
    report = forget_subject("subject-3")
    # subject-3 owns records 3, 13, ..., 113: twelve of them.
    assert report.sources == [{"name": "tickets", "removed_records": 12, "revision": 2}]
    ((old, new),) = [(v["old"], v["new"]) for v in report.versions]
    assert old == v1.version_id and new and new != old
    assert [r["run"] for r in report.runs] == ["run-a"]
    with catalog.session() as s:
        src = catalog.get_source(s, "tickets")
        newest = catalog.resolve_version(s, "tickets")
        old_row = s.get(catalog.Version, old)
        marks = [(r.run, r.dataset_version) for r in s.scalars(catalog.select(catalog.RetrainRequired))]
    assert (src.records, src.revision) == (108, 2)
    assert not any(r.subject_id == "subject-3" for r in iter_source_records(src))
    assert sum(1 for r in iter_source_records(src) if r.subject_id == "subject-4") == 12
    assert newest.id == new and newest.parent == old
    answers = _answers(workspace / newest.path)
    assert "ORDER=1003; ISSUE=case 3" not in answers and "ORDER=1004; ISSUE=case 4" in answers
    # The old version's records are gone; its manifest and card remain as the record.
    assert old_row.status == "withdrawn" and not (v1.path / "train.jsonl").exists()
    assert (v1.path / "manifest.json").exists()
    assert marks == [("run-a", v1.version_id)]
    # The old raw snapshot file is gone too.
    assert len(list((workspace / "catalog" / "raw").glob("*.enc"))) == 1


def test_every_name_of_a_withdrawn_version_moves_to_its_successor(source):
    v1 = run_intake("support-v1", [(source, "auto")], SPEC)
    assert run_intake("support-v2", [(source, "auto")], SPEC).version_id == v1.version_id
    ((change,),) = [forget_subject("subject-3").versions]
    with catalog.session() as s:
        assert catalog.resolve_version(s, "support-v1").id == change["new"]
        assert catalog.resolve_version(s, "support-v2").id == change["new"]


def test_forget_unknown_subject_changes_nothing(source):
    run_intake("tickets", [(source, "auto")], SPEC)
    before = catalog.snapshot_table()
    report = forget_subject("nobody")
    assert (report.sources, report.versions, report.runs) == ([], [], [])
    assert catalog.snapshot_table() == before


def test_sweep_removes_expired_sources_and_rebuilds(tmp_path, workspace):
    today = dt.date.today()
    soon, later = (today + dt.timedelta(days=10)).isoformat(), (today + dt.timedelta(days=400)).isoformat()
    keep = add_source(
        write_jsonl(tmp_path / "k.jsonl", tickets(40, seed=1)), info("keep", retain_until=later)
    )
    old = add_source(write_jsonl(tmp_path / "o.jsonl", tickets(30, seed=2)), info("old", retain_until=soon))
    v1 = run_intake("mix", [(keep, "auto"), (old, "auto")], SPEC)
    _fake_run(workspace, "run-x", v1.version_id)
    report = sweep(today + dt.timedelta(days=30))
    assert [s["name"] for s in report.sources] == ["old"]
    ((v,),) = [report.versions]
    assert v["old"] == v1.version_id and v["new"]
    assert [r["run"] for r in report.runs] == ["run-x"]
    with catalog.session() as s:
        assert catalog.get_source(s, "old").status == "removed"
        newest = catalog.resolve_version(s, "mix")
    assert newest.train + newest.eval == 40
    assert not (workspace / old.snapshot).exists() and (workspace / keep.snapshot).exists()
    # A second sweep on the same day has nothing left to do.
    again = sweep(today + dt.timedelta(days=30))
    assert (again.sources, again.versions) == ([], [])
