"""Registering a source: validate every line, keep an encrypted raw snapshot, record provenance.

Nothing is registered unless the whole file validates: the snapshot is written atomically
and removed again if the catalog transaction fails, so a bad file leaves no trace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from lamina import faults, fsio, workspace
from lamina.data import catalog
from lamina.data.formats import FORMATS, Record, decode_line, iter_jsonl, parse_record
from lamina.data.ops import exclusive_call
from lamina.errors import LaminaError
from lamina.governance import crypto
from lamina.names import check_name

LAWFUL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interest",
)


@dataclass
class SourceInfo:
    name: str
    licence: str
    origin: str
    purpose: str
    lawful_basis: str
    format: str = "chat"
    consent_ref: str | None = None
    retain_until: str | None = None
    personal_data: bool = True


def _check_info(info: SourceInfo) -> None:
    check_name(info.name, "--name")
    if not info.licence.strip() or info.licence.strip().lower() in {"none", "unknown"}:
        raise LaminaError(
            "every source needs a licence (an SPDX id such as cc-by-4.0, or `internal`)", "--licence"
        )
    if info.format not in FORMATS:
        raise LaminaError(f"unknown format {info.format!r}; expected one of {', '.join(FORMATS)}", "--format")
    if info.lawful_basis not in LAWFUL_BASES:
        raise LaminaError(f"{info.lawful_basis!r} is not one of {', '.join(LAWFUL_BASES)}", "--lawful-basis")
    if info.lawful_basis == "consent" and info.personal_data and not info.consent_ref:
        raise LaminaError("personal data held on consent needs a --consent-ref", "--consent-ref")
    if info.retain_until is not None:
        try:
            dt.date.fromisoformat(info.retain_until)
        except ValueError:
            raise LaminaError(f"{info.retain_until!r} is not a date (YYYY-MM-DD)", "--retain-until") from None


def _scan(path: Path, fmt: str) -> tuple[int, str, set[str]]:
    """Validate every line; return (records, sha256 of the bytes, subject ids). Nothing is
    read from or written to the workspace, so a bad file is refused before any key exists."""
    count, subjects = 0, set()
    for _, rec in iter_jsonl(path, fmt):
        count += 1
        if rec.subject_id is not None:
            subjects.add(rec.subject_id)
    return count, fsio.sha256_file(path), subjects


def _snapshot(path: Path, target: Path, expect_sha: str) -> None:
    h = hashlib.sha256()
    with crypto.open_encrypted_writer(target) as w, open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            w.write(block)
        if h.hexdigest() != expect_sha:
            raise LaminaError("the file changed while it was being registered; try again", str(path))


_COMPARED = ("licence", "origin", "purpose", "lawful_basis", "format", "consent_ref", "retain_until", "personal_data")


def _earlier(sha: str, info: SourceInfo) -> catalog.Source | None:
    """The source already registered under this name, when it is these bytes with this
    metadata (a repeated command); None when the name is free; an error naming what differs."""
    with catalog.session() as s:
        src = s.scalar(select(catalog.Source).where(catalog.Source.name == info.name))
    if src is None:
        return None
    differ = [f"status ({src.status})"] if src.status != "active" else []
    if sha != src.sha256:
        differ.append(f"content (sha256 {src.sha256[:12]}… registered, {sha[:12]}… now)")
    for key in _COMPARED:
        old, new = getattr(src, key), getattr(info, key)
        if (old.strip() if isinstance(old, str) else old) != (new.strip() if isinstance(new, str) else new):
            differ.append(f"{key} ({old!r} registered, {new!r} now)")
    if differ:
        raise LaminaError(f"a source named {info.name!r} already exists with a different {'; '.join(differ)}",
                          "--name")
    return src


@exclusive_call
def register_source(path: str | Path, info: SourceInfo) -> tuple[catalog.Source, bool]:
    """(source, True) when `path` is registered now; (the earlier source, False) when the same
    bytes were registered under this name with the same metadata — a repeat changes nothing."""
    path = Path(path)
    _check_info(info)
    scanned = _scan(path, info.format)
    earlier = _earlier(scanned[1], info)
    if earlier is not None:
        return earlier, False
    return _insert(path, info, *scanned), True


@exclusive_call
def add_source(path: str | Path, info: SourceInfo) -> catalog.Source:
    """Register `path` as a source. All or nothing."""
    path = Path(path)
    _check_info(info)
    scanned = _scan(path, info.format)
    with catalog.session() as s:
        if s.scalar(select(catalog.Source).where(catalog.Source.name == info.name)) is not None:
            raise LaminaError(f"a source named {info.name!r} already exists", "--name")
    return _insert(path, info, *scanned)


def _insert(path: Path, info: SourceInfo, count: int, sha: str, subject_ids: set[str]) -> catalog.Source:
    """The first write: keys (made on first use), the encrypted snapshot, the catalog rows."""
    key = crypto.pseudonym_key()
    subjects = {catalog.subject_hash(sid, key) for sid in subject_ids}
    rel = Path("catalog") / "raw" / f"{info.name}-r1-{sha[:12]}.enc"
    target = workspace.home() / rel
    _snapshot(path, target, sha)
    faults.point("data.add.snapshot")
    try:
        with catalog.session() as s:
            src = catalog.Source(
                name=info.name, path=str(path.resolve()), format=info.format, sha256=sha, records=count,
                revision=1, snapshot=str(rel), licence=info.licence.strip(), origin=info.origin,
                purpose=info.purpose, lawful_basis=info.lawful_basis, consent_ref=info.consent_ref,
                retain_until=info.retain_until, personal_data=info.personal_data, added_at=catalog.now(),
                added_by=workspace.user(), status="active",
            )  # fmt: skip
            s.add(src)
            s.flush()
            s.add_all(catalog.SourceSubject(source_id=src.id, subject=h) for h in sorted(subjects))
            catalog.stamp(s, source=src.name, sha256=sha, licence=src.licence)
        return src
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise


def iter_source_records(src: catalog.Source) -> Iterator[Record]:
    """The source's raw records, decrypted and parsed as a stream."""
    snap = workspace.home() / src.snapshot
    for lineno, raw in enumerate(crypto.iter_lines(snap), start=1):
        obj = decode_line(raw, lineno, f"{src.name}:{lineno}")
        if obj is not None:
            yield parse_record(obj, src.format, f"{src.name}:{lineno}")


def iter_source_lines(src: catalog.Source) -> Iterator[tuple[bytes, Record | None]]:
    """(raw line, parsed record or None for blank lines) — for rewriting a snapshot."""
    snap = workspace.home() / src.snapshot
    for lineno, raw in enumerate(crypto.iter_lines(snap), start=1):
        obj = decode_line(raw, lineno, f"{src.name}:{lineno}")
        yield raw, None if obj is None else parse_record(obj, src.format, f"{src.name}:{lineno}")
