"""The audit log's head, anchored in the tracking store after every command that wrote to it.

Per-model anchors (lamina.registry.anchor) pin the entries of registry actions; this pins the
head of the whole log — every entry, since each hashes the one before — as a tag on Lamina's
MLflow experiment, keyed by the log's place. With a tracking server, that copy is one the
workspace (and its owner's config directory) cannot rewrite alone; `lamina audit verify`
compares the log with it.

Cost: an MLflow server is called once per command that wrote an entry (the client is opened
if the command had not opened it). A local sqlite store lies on the same disk as the copy of
the head kept in the config directory, so it is written only when the command opened it
anyway: no command pays for opening a store just to anchor.
"""

from __future__ import annotations

import json
import os

from lamina.fsio import canonical_json
from lamina.governance import audit
from lamina.registry import tracking
from lamina.registry.anchor import PREFIX, _store_exists, tag

HEAD_PREFIX = "lamina.audit_head."


def _key() -> str:
    return HEAD_PREFIX + tag()[len(PREFIX):]


def server_uri() -> bool:
    uri = os.environ.get("LAMINA_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI") or ""
    return uri.startswith(("http://", "https://"))


def client_calls() -> int:
    info = tracking._client_for.cache_info()
    return info.hits + info.misses


def after_command(calls_before: int) -> None:
    """Anchor the last entry this command wrote, where that is worth its cost (see above)."""
    if not audit.LAST_WRITTEN:
        return
    if server_uri() or (client_calls() != calls_before and _store_exists()):
        anchor(audit.LAST_WRITTEN[-1])


def anchor(entry: dict) -> None:
    value = {"seq": entry["seq"], "hash": entry["hash"], "user": entry["user"]}
    if entry.get("sig"):
        value["sig"] = entry["sig"]
    with tracking.server_errors("anchoring the audit log's head"):
        tracking.client().set_experiment_tag(tracking.experiment_id(), _key(), canonical_json(value))


def read() -> dict | None:
    """The anchored head, or None (no store, no experiment, nothing anchored yet)."""
    if not _store_exists():
        return None
    from lamina.recipe import RegistrySpec

    exp = tracking.client().get_experiment_by_name(RegistrySpec().experiment)
    value = exp.tags.get(_key()) if exp is not None else None
    return json.loads(value) if value else None


def check() -> list[str]:
    """Where the log disagrees with the head anchored in the tracking store."""
    head = read()
    if head is None:
        return []
    by_seq = {e.get("seq"): e for e in audit.entries()}
    last = max(by_seq, default=0)
    if head["seq"] > last:
        return [f"truncated: the tracking store's anchor is seq {head['seq']} by {head['user']}, "
                f"the log ends at seq {last}"]
    if (by_seq.get(head["seq"]) or {}).get("hash") != head["hash"]:
        return [f"entry seq {head['seq']} differs from the head anchored in the tracking store"]
    return []
