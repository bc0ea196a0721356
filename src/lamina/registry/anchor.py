"""Audit anchors: the audit log's head, written beside each registry change in MLflow.

A hash chain shows edits, deletions and reordering, but someone who rewrites the whole log
and its head file consistently leaves a valid chain. Each register/promote/rollback therefore
also stores `seq:hash` of its audit entry as a tag on the registered model — in the tracking
store, which (with a server) the person editing the local log cannot rewrite. `lamina audit
verify` compares the log against every anchor.

With a shared server every teammate's workspace has its own log, so the tag is keyed by the
log's place (host and workspace path) — not by anything stored in the log, which a forger
could rewrite along with it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from lamina.fsio import sha256_bytes
from lamina.governance import audit
from lamina.registry import tracking
from lamina.registry.moves import alias_problem

PREFIX = "lamina.audit_anchor."


def tag() -> str:
    place = f"{socket.gethostname()}:{audit.log_path().resolve()}"
    return PREFIX + sha256_bytes(place.encode())[:16]


def anchor(name: str, entry: dict) -> None:
    with tracking.server_errors(f"anchoring the audit log on {name}"):
        tracking.client().set_registered_model_tag(name, tag(), f"{entry['seq']}:{entry['hash']}")


def _store_exists() -> bool:
    uri = tracking.tracking_uri()
    return not tracking.is_embedded(uri) or Path(uri.removeprefix("sqlite:///")).exists()


def check(log: Path | None = None) -> list[str]:
    """Problems where the log disagrees with an anchor; empty when every anchor matches."""
    if not _store_exists():
        return []
    by_seq = {e["seq"]: e for e in audit.entries(log)}
    problems = []
    for model in tracking.client().search_registered_models():
        value = model.tags.get(tag())
        if not value:
            continue
        seq, digest = value.split(":", 1)
        entry = by_seq.get(int(seq))
        if entry is None:
            problems.append(f"audit entry seq {seq} anchored on model {model.name} is missing from the log")
        elif entry["hash"] != digest:
            problems.append(f"audit entry seq {seq} differs from the hash anchored on model {model.name}")
    return problems + alias_problems()


def alias_problems() -> list[str]:
    """Aliases that do not point where Lamina's recorded moves put them (moved with MLflow's
    own API or UI, which bypasses gates, four eyes and the audit log)."""
    problems = []
    for model in tracking.client().search_registered_models():
        for alias, version in sorted((model.aliases or {}).items()):
            problem = alias_problem(model.tags, alias, int(version))
            if problem:
                problems.append(f"model {model.name}: {problem}")
    return problems
