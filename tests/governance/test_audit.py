"""The hash-chained audit log detects edited, deleted, reordered and truncated lines."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.governance import audit


def _write_three() -> list[str]:
    for i in range(3):
        audit.record("register", user="alice", version=i + 1)
    return audit.log_path().read_text().splitlines()


def test_intact_log_verifies_and_chains():
    lines = _write_three()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == audit.GENESIS
    assert entries[1]["prev"] == entries[0]["hash"] and entries[2]["prev"] == entries[1]["hash"]
    verdict = audit.verify()
    assert verdict.ok and verdict.entries == 3


def test_edited_line_is_named():
    lines = _write_three()
    edited = json.loads(lines[1])
    edited["details"]["version"] = 99
    lines[1] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    audit.log_path().write_text("\n".join(lines) + "\n")
    verdict = audit.verify()
    assert not verdict.ok
    assert any(":2: entry seq 2 was edited" in p for p in verdict.problems)


def test_deleted_middle_line_is_named():
    lines = _write_three()
    audit.log_path().write_text("\n".join([lines[0], lines[2]]) + "\n")
    verdict = audit.verify()
    assert any("entries deleted: seq 2" in p for p in verdict.problems)
    assert any(":2: chain broken" in p for p in verdict.problems)


def test_reordered_lines_are_named():
    lines = _write_three()
    audit.log_path().write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    verdict = audit.verify()
    assert any(":3: entries reordered (seq 2 comes after seq 3)" in p for p in verdict.problems)
    assert not any("deleted" in p for p in verdict.problems)


def test_truncated_tail_is_detected_through_the_head():
    lines = _write_three()
    audit.log_path().write_text("\n".join(lines[:2]) + "\n")
    verdict = audit.verify()
    assert verdict.problems == [f"{audit.log_path()}: truncated: head says seq 3, the log ends at seq 2"]


def test_require_valid_raises_lamina_error():
    lines = _write_three()
    audit.log_path().write_text(lines[0] + "\n{not json\n" + lines[2] + "\n")
    with pytest.raises(LaminaError, match=r"audit.jsonl:2: not a valid audit entry"):
        audit.require_valid()


def test_entries_returns_parsed_entries():
    _write_three()
    assert [e["details"]["version"] for e in audit.entries()] == [1, 2, 3]
