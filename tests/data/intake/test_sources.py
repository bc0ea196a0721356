"""Registering sources: provenance recorded, raw copy encrypted, bad input changes nothing."""

from __future__ import annotations

import json

import pytest
from intake_fixtures import info, tickets, write_jsonl

from lamina.data import catalog
from lamina.data.intake.sources import add_source, iter_source_records
from lamina.errors import LaminaError


def _raw_files(workspace):
    return (
        sorted(p.name for p in (workspace / "catalog" / "raw").glob("*"))
        if (workspace / "catalog" / "raw").exists()
        else []
    )


def test_add_records_provenance_and_encrypts_the_raw_copy(corpus, workspace):
    src = add_source(corpus, info(retain_until="2030-01-31"))
    assert (src.records, src.licence, src.lawful_basis, src.consent_ref) == (
        120,
        "cc-by-4.0",
        "consent",
        "form-7",
    )
    assert src.retain_until == "2030-01-31" and src.revision == 1 and src.status == "active"
    snapshot = (workspace / src.snapshot).read_bytes()
    first_user_text = json.loads(corpus.read_text().splitlines()[0])["messages"][1]["content"]
    assert first_user_text.encode() not in snapshot and b"Ticket 0" not in snapshot
    assert [r.messages for r in iter_source_records(src)] == [r["messages"] for r in tickets(120)]
    with catalog.session() as s:
        assert len(list(s.scalars(catalog.select(catalog.SourceSubject)))) == 10


def _bad_files(tmp_path):
    good = json.dumps(tickets(1)[0])
    cases = {
        "non_utf8": (b"\xff\xfe" + good.encode() + b"\n", "not valid UTF-8", 1),
        "malformed_json": ((good + "\n" + '{"messages": [}\n').encode(), "malformed JSON", 2),
        "wrong_schema": ((good + "\n" + good + "\n" + '{"prompt": "x"}\n').encode(), "missing `messages`", 3),
        "empty": (b"\n\n", "no records", None),
    }
    out = {}
    for name, (data, msg, line) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(data)
        out[name] = (path, msg, line)
    return out


@pytest.mark.parametrize("case", ["non_utf8", "malformed_json", "wrong_schema", "empty", "missing"])
def test_bad_file_is_named_and_changes_nothing(tmp_path, workspace, corpus, case):
    add_source(corpus, info("existing"))
    before, raw_before = catalog.snapshot_table(), _raw_files(workspace)
    if case == "missing":
        path, msg, line = tmp_path / "nope.jsonl", "no such data file", None
    else:
        path, msg, line = _bad_files(tmp_path)[case]
    with pytest.raises(LaminaError, match=msg) as err:
        add_source(path, info("new"))
    where = f"{path}:{line}" if line else str(path)
    assert str(err.value).startswith(where + ":")
    assert catalog.snapshot_table() == before and _raw_files(workspace) == raw_before


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"licence": ""}, "--licence"),
        ({"licence": "none"}, "--licence"),
        ({"lawful_basis": "because"}, "--lawful-basis"),
        ({"consent_ref": None}, "--consent-ref"),
        ({"retain_until": "next year"}, "--retain-until"),
        ({"format": "csv"}, "--format"),
    ],
)
def test_bad_provenance_is_refused_by_option(corpus, workspace, kw, key):
    before = catalog.snapshot_table()
    with pytest.raises(LaminaError, match=f"^{key}:"):
        add_source(corpus, info(**kw))
    assert catalog.snapshot_table() == before and _raw_files(workspace) == []


def test_duplicate_name_is_refused(corpus, workspace):
    add_source(corpus, info())
    before = catalog.snapshot_table()
    with pytest.raises(LaminaError, match="already exists"):
        add_source(corpus, info())
    assert catalog.snapshot_table() == before and len(_raw_files(workspace)) == 1


def test_catalog_failure_removes_the_snapshot(corpus, workspace, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    real = catalog.SourceSubject
    monkeypatch.setattr(catalog, "SourceSubject", boom)
    with pytest.raises(RuntimeError):
        add_source(corpus, info())
    # Not monkeypatch.undo(): that would also undo this test's LAMINA_HOME.
    monkeypatch.setattr(catalog, "SourceSubject", real)
    assert catalog.snapshot_table()["sources"] == [] and _raw_files(workspace) == []


def test_prompt_completion_sources_are_read_as_chat(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Hi, call 415-555-0132", "completion": "ok"}])
    src = add_source(path, info("pc", format="prompt_completion"))
    (rec,) = list(iter_source_records(src))
    assert rec.messages[-1] == {"role": "assistant", "content": "ok"}


def test_wrong_master_key_at_add_is_named_and_changes_nothing(corpus, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("LAMINA_MASTER_KEY", "55" * 32)
    add_source(corpus, info("first"))
    before, raw_before = catalog.snapshot_table(), _raw_files(workspace)
    monkeypatch.setenv("LAMINA_MASTER_KEY", "66" * 32)
    second = write_jsonl(tmp_path / "second.jsonl", tickets(3))
    with pytest.raises(LaminaError, match="pseudonym.key.enc: encrypted with master key"):
        add_source(second, info("second"))
    assert catalog.snapshot_table() == before and _raw_files(workspace) == raw_before
