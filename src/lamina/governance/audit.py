"""The audit log: every mutating action as one JSON line, each line hashing the one before.

Line i carries `prev` = hash of line i-1 and `hash` = sha256 of its own canonical JSON
(without `hash`). Editing a line breaks its hash; deleting or reordering lines breaks the
sequence numbers and the `prev` links. Deleting the *last* lines leaves a valid prefix, so
the head (last seq and hash) is also kept in a separate file and compared on verify.

The head file lies in the workspace, so whoever can edit the log can rewrite it too. Each
entry therefore also moves a copy of the head outside the workspace (`<secrets_dir>/
audit-head.json`, the acting user's config directory), the CLI anchors the head in the
tracking store after each command that wrote one (lamina.registry.audit_head), and an entry
is signed with the actor's personal key when they hold one (`sig`: key id and signature of the
entry's hash without `sig`): an edit then breaks a signature its editor cannot remake.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import append_line, canonical_json, read_json, sha256_bytes, write_json

GENESIS = "0" * 64


def log_path() -> Path:
    return workspace.subdir("audit") / "audit.jsonl"


def _head_path() -> Path:
    return workspace.subdir("audit") / "head.json"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # Two processes appending at once would both chain onto the same predecessor.
    with FileLock(workspace.subdir("audit") / ".lock"):
        yield


def entry_hash(entry: dict) -> str:
    """sha256 of the entry without `hash` (with `sig` when signed; the signature itself is
    made over the hash of the entry without `sig`)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return sha256_bytes(canonical_json(body).encode())


def _last_entry(path: Path) -> dict | None:
    if not path.exists():
        return None
    last = None
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                last = line
    try:
        return json.loads(last) if last else None
    except ValueError:  # not UTF-8, or not JSON: the chain cannot be extended from it
        raise LaminaError("the last line is not an audit entry; run `lamina audit verify`", str(path)) from None


# Acts whose entries must carry their actor's signature (unless settled by a later command).
SIGNED = frozenset({"register", "promote", "rollback", "policy.init", "policy.grant", "policy.enroll",
                    "policy.revoke", "policy.sign", "policy.role", "policy.encrypt_at_rest", "keys.init",
                    "keys.rotate"})
LAST_WRITTEN: list[dict] = []  # the last entry this process wrote (the CLI anchors it)


def pin_path() -> Path:
    """The copy of the head outside the workspace."""
    return workspace.secrets_dir() / "audit-head.json"


def _write_pin(head: dict) -> None:
    # Atomic but not fsynced: the log line is already on disk, so a crash can only leave the
    # copy one entry behind (still consistent), and an fsync here would double record's cost.
    pin = pin_path()
    tmp = pin.with_name(f".{pin.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(head) + "\n")
    os.replace(tmp, pin)


def _sign(entry: dict) -> None:
    from lamina.governance import identity

    signed = identity.sign(entry["user"], identity.AUDIT + entry_hash(entry).encode())
    if signed:
        entry["sig"] = signed


def record(action: str, user: str | None = None, **details: Any) -> dict:
    """Append one action to the log and return the entry written."""
    path = log_path()
    with _locked():
        last = _last_entry(path)
        entry = {
            "seq": (last["seq"] + 1) if last else 1,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "user": user or workspace.user(),
            "action": action,
            "details": json.loads(json.dumps(details, default=str)),
            "prev": last["hash"] if last else GENESIS,
        }
        _sign(entry)
        entry["hash"] = entry_hash(entry)
        append_line(path, canonical_json(entry))
        write_json(_head_path(), {"seq": entry["seq"], "hash": entry["hash"]})
        _write_pin({"seq": entry["seq"], "hash": entry["hash"], "log": str(path)})
    LAST_WRITTEN[:] = [entry]
    return entry


@dataclass
class Verdict:
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_lines(path: Path, verdict: Verdict) -> list[tuple[int, dict]]:
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not {"seq", "prev", "hash"} <= entry.keys():
                raise ValueError("missing seq/prev/hash")
        except ValueError as e:
            verdict.problems.append(f"{path}:{lineno}: not a valid audit entry ({e})")
            continue
        entries.append((lineno, entry))
    return entries


def _check_order(path: Path, entries: list[tuple[int, dict]], verdict: Verdict) -> None:
    seqs = [e["seq"] for _, e in entries]
    present = set(seqs)
    for lineno, entry in entries:
        if entry_hash(entry) != entry["hash"]:
            verdict.problems.append(f"{path}:{lineno}: entry seq {entry['seq']} was edited (hash mismatch)")
    missing = [s for s in range(1, max(seqs, default=0) + 1) if s not in present]
    if missing:
        verdict.problems.append(f"{path}: entries deleted: seq {', '.join(map(str, missing))}")
    for (_, before), (lineno, entry) in zip(entries, entries[1:], strict=False):
        if entry["seq"] < before["seq"]:
            verdict.problems.append(
                f"{path}:{lineno}: entries reordered (seq {entry['seq']} comes after seq {before['seq']})"
            )
            break
    prev = GENESIS
    for lineno, entry in entries:
        if entry["prev"] != prev:
            verdict.problems.append(f"{path}:{lineno}: chain broken (prev does not match the line before)")
            break
        prev = entry["hash"]


def verify(path: Path | None = None) -> Verdict:
    """Check the whole chain; the verdict lists each problem with the line it was found at."""
    path = path or log_path()
    verdict = Verdict()
    if not path.exists():
        return verdict
    entries = _parse_lines(path, verdict)
    verdict.entries = len(entries)
    _check_order(path, entries, verdict)
    head_file = path.parent / "head.json"
    if head_file.exists() and entries:
        head = read_json(head_file)
        last = entries[-1][1]
        if head.get("seq", 0) > max(e["seq"] for _, e in entries):
            verdict.problems.append(
                f"{path}: truncated: head says seq {head['seq']}, the log ends at seq {last['seq']}"
            )
        elif head.get("hash") != last["hash"] and head.get("seq") == last["seq"]:
            verdict.problems.append(f"{path}: last entry does not match the recorded head ({head_file})")
    elif head_file.exists() and not entries:
        verdict.problems.append(
            f"{path}: empty, but {head_file} records {read_json(head_file).get('seq')} entries"
        )
    return verdict


def entries(path: Path | None = None) -> list[dict]:
    """The log's entries that parse (for cross-checks; `verify` reports the ones that do not)."""
    path = path or log_path()
    return [e for _, e in _parse_lines(path, Verdict())] if path.exists() else []


def require_valid(path: Path | None = None) -> Verdict:
    verdict = verify(path)
    if not verdict.ok:
        raise LaminaError("audit log failed verification:\n  " + "\n  ".join(verdict.problems))
    return verdict
