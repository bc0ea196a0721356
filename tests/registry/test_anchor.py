"""A consistently rewritten audit log (valid chain, matching head) is caught by the anchors
kept beside the registry's models."""

from __future__ import annotations

import json

from lamina.fsio import canonical_json
from lamina.governance import audit
from lamina.registry import aliases, anchor, versions


def _rewrite(edit) -> None:
    """Re-chain the whole log after `edit`, as a careful forger would, head file included."""
    entries = [json.loads(line) for line in audit.log_path().read_text().splitlines()]
    edit(entries)
    prev = audit.GENESIS
    for i, e in enumerate(entries, start=1):
        e["seq"], e["prev"] = i, prev
        e["hash"] = audit.entry_hash(e)
        prev = e["hash"]
    audit.log_path().write_text("".join(canonical_json(e) + "\n" for e in entries))
    (audit.log_path().parent / "head.json").write_text(json.dumps({"seq": len(entries), "hash": prev}))


def test_forged_but_consistent_log_is_caught_by_the_anchor(runs, monkeypatch):
    versions.register(runs[0], "tickets")
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", 1, "production", reason="ok")
    assert audit.verify().ok and anchor.check() == []

    def blame_someone_else(entries):
        for e in entries:
            if e["action"] == "promote":
                e["user"] = "mallory"

    _rewrite(blame_someone_else)
    assert audit.verify().ok  # the chain alone cannot tell
    problems = anchor.check()
    assert len(problems) == 1 and "differs from the hash anchored on model tickets" in problems[0]


def test_teammates_anchors_are_not_this_logs_business(runs):
    versions.register(runs[0], "tickets")
    from lamina.registry import tracking

    tracking.client().set_registered_model_tag(
        "tickets", anchor.PREFIX + "0123456789abcdef", "99:" + "f" * 64
    )
    assert anchor.check() == []
    tracking.client().set_registered_model_tag("tickets", anchor.tag(), "99:" + "f" * 64)
    assert anchor.check() == ["audit entry seq 99 anchored on model tickets is missing from the log"]
