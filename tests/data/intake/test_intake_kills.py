"""`lamina data add` / `data intake` killed at each named point (lamina.faults): the next
command completes or undoes the change, with exactly one audit entry per applied change,
and clears what the killed one left on disk (raw snapshots, `.stage-*` directories)."""

from __future__ import annotations

import pytest
from intake_fixtures import tickets, write_jsonl
from sqlalchemy import select

from killpoints import ADD, entries, lamina_cli, lamina_main
from lamina.data import catalog
from lamina.governance import access, audit
from lamina.registry import coverage

slow = pytest.mark.slow


def _sources() -> dict[str, str]:
    with catalog.session() as s:
        return {src.name: src.snapshot for src in s.scalars(select(catalog.Source))}


def _versions() -> list[str]:
    with catalog.session() as s:
        return [v.id for v in s.scalars(select(catalog.Version))]


def _on_disk(workspace, area: str) -> list[str]:
    root = workspace / area
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.fixture
def files(tmp_path):
    access.init_policy("alice")
    return (write_jsonl(tmp_path / "a.jsonl", tickets(24)), write_jsonl(tmp_path / "b.jsonl", tickets(24, seed=1)))


@pytest.mark.parametrize("point, applied", [
    ("data.add.applied", True),
    pytest.param("data.add.intent", False, marks=slow),
    pytest.param("data.add.snapshot", False, marks=slow),
    pytest.param("data.add.audited", True, marks=slow),
])  # fmt: skip
def test_killed_data_add_is_completed_or_undone_by_the_next_command(files, workspace, point, applied):
    a, b = files
    lamina_cli("data", "add", str(a), "--name", "a", *ADD, kill=point)
    if point == "data.add.applied":
        # Until the next command runs, `audit verify` names the source its entry is missing for.
        gaps = coverage.check()
        assert "data source 'a' has no data.add audit entry" in gaps
        assert any(g.startswith("operation data.add ") for g in gaps)
    assert lamina_main("data", "add", str(b), "--name", "b", *ADD)[0] == 0
    sources = _sources()
    assert sorted(sources) == (["a", "b"] if applied else ["b"])
    assert sorted(d["source"] for d in entries("data.add")) == sorted(sources)
    # Every snapshot left on disk is one a source lists: nothing `data forget` could miss.
    assert _on_disk(workspace, "catalog/raw") == sorted(p.split("/")[-1] for p in sources.values())
    assert coverage.check() == [] and audit.verify().ok


@pytest.mark.parametrize("point, applied", [
    ("data.intake.staged", False),
    pytest.param("data.intake.intent", False, marks=slow),
    pytest.param("data.intake.applied", True, marks=slow),
    pytest.param("data.intake.audited", True, marks=slow),
])  # fmt: skip
def test_killed_data_intake_is_completed_or_undone_by_the_next_command(files, workspace, point, applied):
    a, b = files
    for f, n in ((a, "a"), (b, "b")):
        assert lamina_main("data", "add", str(f), "--name", n, *ADD)[0] == 0
    assert lamina_main("data", "intake", "a", "--name", "support")[0] == 0  # the workspace has datasets/
    (first,) = _versions()
    lamina_cli("data", "intake", "b", "--name", "other", kill=point)
    if point == "data.intake.staged":
        assert any(n.startswith(".lamina-stage-") for n in _on_disk(workspace, "datasets"))
    assert lamina_main("data", "forget", "--subject-id", "nobody")[0] == 0  # the next catalog command
    made = _versions()
    assert len(made) == (2 if applied else 1) and first in made
    assert sorted(d["version"] for d in entries("data.intake")) == sorted(made)
    assert _on_disk(workspace, "datasets") == sorted(made)  # no stage or half-written directory left
    assert coverage.check() == [] and audit.verify().ok


@slow
def test_forget_after_a_killed_add_leaves_no_snapshot_holding_the_subject(files, workspace):
    a, _ = files
    lamina_cli("data", "add", str(a), "--name", "a", *ADD, kill="data.add.snapshot")
    assert len(_on_disk(workspace, "catalog/raw")) == 1  # encrypted, and in no catalog row
    assert lamina_main("data", "forget", "--subject-id", "subject-3")[0] == 0
    assert _on_disk(workspace, "catalog/raw") == [] and _sources() == {}
    (removed,) = [d["removed"] for d in entries("data.leftovers")]
    assert len(removed) == 1 and removed[0].startswith("catalog/raw/a-r1-")
