"""`lamina data forget` and `data sweep` killed at each named point (lamina.faults): a
withdrawal is never undone, so the next catalog command — or the retry, which then says
"already done" — finishes it, with exactly one audit entry; and a first intake killed in a
new workspace leaves its stage inside the workspace, where the next command removes it."""

from __future__ import annotations

import datetime as dt

import pytest
from intake_fixtures import tickets, write_jsonl
from sqlalchemy import select

from killpoints import ADD, entries, lamina_cli, lamina_main
from lamina import fsio
from lamina.data import catalog
from lamina.data.intake.withdraw import subject_of
from lamina.governance import access, audit
from lamina.registry import coverage

slow = pytest.mark.slow


def _versions() -> dict[str, str]:
    with catalog.session() as s:
        return {v.id: v.status for v in s.scalars(select(catalog.Version))}


def _marks() -> list[tuple[str, str]]:
    with catalog.session() as s:
        return sorted((r.run, r.dataset_version) for r in s.scalars(select(catalog.RetrainRequired)))


def _clean(workspace) -> None:
    assert coverage.check() == [] and audit.verify().ok
    assert not list((workspace / "audit" / "intents").glob("*/*.json"))
    with catalog.session() as s:  # every snapshot on disk is one a source names
        named = sorted(src.snapshot.split("/")[-1] for src in s.scalars(select(catalog.Source)))
    assert sorted(p.name for p in (workspace / "catalog" / "raw").iterdir()) == named
    assert not [p for p in (workspace / "datasets").iterdir() if p.name.startswith(".")]


@pytest.fixture
def two_versions(tmp_path, workspace):
    """Sources a and b (subject-3 in both), versions `one` (of a) and `two` (of b), a run on each."""
    access.init_policy("alice")
    for name, seed in (("a", 0), ("b", 1)):
        f = write_jsonl(tmp_path / f"{name}.jsonl", tickets(24, seed=seed))
        assert lamina_main("data", "add", str(f), "--name", name, *ADD)[0] == 0
    for src, name in (("a", "one"), ("b", "two")):
        assert lamina_main("data", "intake", src, "--name", name)[0] == 0
    olds = sorted(_versions())
    for i, vid in enumerate(olds):
        fsio.write_json(workspace / "runs" / f"run-{i}" / "run.json", {"id": f"run-{i}", "data": {"dataset_version": vid}})
    return olds, tmp_path


@pytest.mark.parametrize("point, next_command", [
    ("data.withdraw.rebuilt", "add"),  # one version rebuilt, the other not yet
    ("data.withdraw.source", "retry"),  # one source rewritten, nothing rebuilt
    pytest.param("data.forget.intent", "add", marks=slow),
    pytest.param("data.forget.applied", "retry", marks=slow),
    pytest.param("data.forget.audited", "add", marks=slow),
])  # fmt: skip
def test_killed_forget_is_finished_by_the_next_command_with_one_entry(two_versions, workspace, point, next_command):
    olds, tmp = two_versions
    lamina_cli("data", "forget", "--subject-id", "subject-3", kill=point)
    if next_command == "add":
        f = write_jsonl(tmp / "c.jsonl", tickets(12, seed=2, subjects=1))  # subject-0 only
        code, out, err = lamina_main("data", "add", str(f), "--name", "c", *ADD)
    else:
        code, out, err = lamina_main("data", "forget", "--subject-id", "subject-3")
        assert out.startswith("already done (finished after an interruption): subject withdrawal")
    assert code == 0, err
    (entry,) = entries("data.forget")
    assert sorted(v["old"] for v in entry["versions"]) == olds and all(v["new"] for v in entry["versions"])
    assert sorted(s["name"] for s in entry["sources"]) == ["a", "b"]
    assert sorted(r["run"] for r in entry["runs"]) == ["run-0", "run-1"]
    now = _versions()
    assert all(now[v] == "withdrawn" for v in olds)
    assert sorted(v for v, st in now.items() if st == "current") == sorted(v["new"] for v in entry["versions"])
    subject = subject_of("subject-3")
    with catalog.session() as s:  # no source and no version holds the subject any more
        assert not s.scalars(select(catalog.SourceSubject).where(catalog.SourceSubject.subject == subject)).all()
        assert not s.scalars(select(catalog.VersionSubject).where(catalog.VersionSubject.subject == subject)).all()
    assert _marks() == sorted(zip(["run-0", "run-1"], olds, strict=True))  # each run marked once
    _clean(workspace)


@pytest.mark.parametrize("point", ["data.withdraw.source", pytest.param("data.sweep.applied", marks=slow)])
def test_killed_sweep_is_finished_and_its_retry_says_already_done(tmp_path, workspace, point):
    access.init_policy("alice")
    soon = (dt.date.today() + dt.timedelta(days=5)).isoformat()
    f = write_jsonl(tmp_path / "o.jsonl", tickets(24))
    assert lamina_main("data", "add", str(f), "--name", "old", *ADD, "--retain-until", soon)[0] == 0
    assert lamina_main("data", "intake", "old", "--name", "mix")[0] == 0
    (old,) = _versions()
    later = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    lamina_cli("data", "sweep", "--today", later, kill=point)
    code, out, err = lamina_main("data", "sweep", "--today", later)
    assert code == 0 and out.startswith("already done (finished after an interruption): retention sweep"), err
    (entry,) = entries("data.sweep")
    assert [s["name"] for s in entry["sources"]] == ["old"] and [v["old"] for v in entry["versions"]] == [old]
    assert _versions() == {old: "withdrawn"}
    with catalog.session() as s:
        assert catalog.get_source(s, "old").status == "removed"
    assert list((workspace / "catalog" / "raw").iterdir()) == []
    assert coverage.check() == [] and audit.verify().ok


def test_a_first_intake_killed_in_a_new_workspace_stages_inside_it_and_is_cleared(tmp_path, workspace):
    access.init_policy("alice")
    a, b = (write_jsonl(tmp_path / f"{n}.jsonl", tickets(24, seed=i)) for i, n in enumerate("ab"))
    assert lamina_main("data", "add", str(a), "--name", "a", *ADD)[0] == 0
    assert not (workspace / "datasets").exists()
    lamina_cli("data", "intake", "a", "--name", "support", kill="data.intake.staged")
    staged = sorted(p.name for p in (workspace / "datasets").iterdir())
    assert len(staged) == 2 and staged[0].startswith(".lamina-stage-") and staged[1] == staged[0] + ".owner"
    assert lamina_main("data", "add", str(b), "--name", "b", *ADD)[0] == 0
    assert list((workspace / "datasets").iterdir()) == []
    (removed,) = [d["removed"] for d in entries("data.leftovers")]
    assert removed == [f"datasets/{staged[0]}"]  # with its owner file
    assert _versions() == {} and audit.verify().ok
