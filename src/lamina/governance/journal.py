"""Intents: a change and its audit entry as one step, even across a kill.

Before a mutating command changes anything it writes an intent (a fresh operation id, the
action, who, what) under `<workspace>/audit/intents/<domain>/`. After the change it writes
the audit entry carrying that operation id, then removes the intent. A kill anywhere in
between leaves the intent behind, and the next command of that domain settles it while it
holds the domain's lock (so the intent's own process is gone): it asks the domain whether
the change took effect — a catalog row stamped with the operation id, an MLflow version or
alias move tagged with it, the policy or key file — then writes the missing audit entry, or
drops the intent of a change that never happened. The log is searched for the operation id
first, so a kill after the entry was written never yields a second one.

An intent also carries a key made from the command's arguments: a retry of the same command
finds its own interrupted intent by that key and reports "already done" instead of acting
again.
"""

from __future__ import annotations

import contextlib
import fcntl
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lamina import faults, workspace
from lamina.fsio import canonical_json, read_json, sha256_bytes, write_json
from lamina.governance import audit

# A probe answers "did this intent's change take effect?": the audit details of the applied
# change (possibly empty), or None when nothing was changed.
Probe = Callable[["Intent"], "dict | None"]

_CURRENT: ContextVar[Intent | None] = ContextVar("lamina_operation", default=None)
_HELD: dict[str, list] = {}  # domain -> [open lock file, depth]: the lock is re-entrant per process


@dataclass
class Intent:
    op_id: str
    key: str
    action: str
    user: str
    domain: str
    details: dict[str, Any]
    started: str
    result: dict[str, Any] = field(default_factory=dict)  # filled by the change, added to the entry

    @property
    def path(self) -> Path:
        return intents_dir(self.domain) / f"{self.op_id}.json"


def intents_root() -> Path:
    """Where intents live (not created by asking)."""
    return workspace.home() / "audit" / "intents"


def intents_dir(domain: str) -> Path:
    path = workspace.subdir("audit") / "intents" / domain
    path.mkdir(parents=True, exist_ok=True)
    return path


def args_key(action: str, **args: Any) -> str:
    """The key of a command by its arguments: the same command retried has the same key."""
    return sha256_bytes(canonical_json({"action": action, **args}).encode())[:32]


def current() -> Intent | None:
    """The operation whose change is being made now in this process, if any."""
    return _CURRENT.get()


def holding(domain: str) -> bool:
    """Whether this process holds the domain's lock already (an inner call of a command)."""
    return domain in _HELD


@contextlib.contextmanager
def locked(domain: str) -> Iterator[None]:
    """Exclusive among processes on this machine; re-entrant within one process."""
    held = _HELD.get(domain)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    lock = open(intents_dir(domain) / ".lock", "a")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    _HELD[domain] = [lock, 1]
    try:
        yield
    finally:
        del _HELD[domain]
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def begin(domain: str, action: str, user: str, key: str | None = None, **details: Any) -> Intent:
    """Write the intent before the change (atomically); returns it."""
    op_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    intent = Intent(op_id, key or op_id, action, user, domain, details, now)
    write_json(intent.path, {k: getattr(intent, k) for k in ("op_id", "key", "action", "user", "domain",
                                                              "details", "started")})
    faults.point(f"{action}.intent")
    return intent


def complete(intent: Intent, **result: Any) -> dict:
    """After the change: write its audit entry (once), then drop the intent."""
    faults.point(f"{intent.action}.applied")
    entry = audit.record(intent.action, user=intent.user, op=intent.op_id, **{**intent.details, **result})
    faults.point(f"{intent.action}.audited")
    intent.path.unlink(missing_ok=True)
    return entry


@contextlib.contextmanager
def operation(domain: str, action: str, user: str, probe: Probe, key: str | None = None,
              **details: Any) -> Iterator[Intent]:
    """`with operation(...) as op: change(); op.result[...] = ...` — intent, change, entry.
    A change that does not fill `op.result` is looked up by the probe afterwards.

    If the change raises, the probe decides: applied (e.g. the failure came after the commit)
    gets its entry; not applied drops the intent; a probe that cannot tell leaves it for the
    next command to settle."""
    intent = begin(domain, action, user, key, **details)
    token = _CURRENT.set(intent)
    try:
        yield intent
    except BaseException:
        _CURRENT.reset(token)
        with contextlib.suppress(Exception):
            found = probe(intent)
            if found is None:  # refused before it changed anything: leave nothing behind
                intent.path.unlink(missing_ok=True)
                for empty in (intent.path.parent, intent.path.parent.parent):
                    with contextlib.suppress(OSError):
                        empty.rmdir()  # only when empty (a locked domain keeps its .lock)
            else:
                intent.result = {**found, **intent.result}
                complete(intent, **intent.result)
        raise
    _CURRENT.reset(token)
    if not intent.result:  # the change left its proof (a stamp, a tag) rather than saying it
        found = probe(intent)
        if found is None:  # nothing was changed after all: nothing to record
            intent.path.unlink(missing_ok=True)
            return
        intent.result = found
    intent.result["entry"] = complete(intent, **intent.result)


def pending(domain: str | None = None) -> list[Intent]:
    """Intents left behind (in one domain, or all), oldest first."""
    root = intents_root()
    paths = (root / domain).glob("*.json") if domain else root.glob("*/*.json")
    found = []
    for path in paths:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            d = read_json(path)
            found.append(Intent(d["op_id"], d["key"], d["action"], d["user"], d["domain"], d["details"],
                                d["started"]))
    return sorted(found, key=lambda i: i.started)


def audited_ops() -> set[str]:
    return {e["details"].get("op") for e in audit.entries() if isinstance(e.get("details"), dict)} - {None}


def settle(domain: str, probes: dict[str, Probe],
           on_entry: Callable[[Intent, dict], None] | None = None) -> list[dict]:
    """Complete or drop every intent left in `domain`; the caller holds the domain's lock.
    Returns [{op, key, action, applied}] — a retried command looks for its own key here."""
    settled, logged = [], None
    for intent in pending(domain):
        probe = probes.get(intent.action)
        if probe is None:
            continue
        found = probe(intent)
        if found is not None:
            logged = audited_ops() if logged is None else logged
            if intent.op_id not in logged:
                entry = audit.record(intent.action, user=intent.user, op=intent.op_id, settled=True,
                                     **{**intent.details, **found})
                if on_entry:
                    on_entry(intent, entry)
        intent.path.unlink(missing_ok=True)
        settled.append({"op": intent.op_id, "key": intent.key, "action": intent.action,
                        "applied": found is not None, "details": {**intent.details, **(found or {})}})
    return settled


def settled_by_key(settled: list[dict], key: str) -> dict | None:
    """The applied operation among `settled` that a retry with this key repeats, if any."""
    return next((s for s in settled if s["key"] == key and s["applied"]), None)
