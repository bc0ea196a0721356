"""Registering a source: validate every line, keep an encrypted raw snapshot, record provenance.

Nothing is registered unless the whole file validates: the snapshot is written atomically
and removed again if the catalog transaction fails, so a bad file leaves no trace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from lamina import faults, fsio, workspace
from lamina.data import catalog
from lamina.data.formats import Record, decode_line, format_of, iter_jsonl, parse_record, record_to_json
from lamina.data.ops import exclusive_call
from lamina.data.readers import Reference, reference
from lamina.data.shapes import SHAPES, check_columns, is_native, iter_records
from lamina.errors import LaminaError
from lamina.governance import crypto
from lamina.names import check_name
from lamina.recipe import LAWFUL_BASES


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
    columns: dict[str, str] | None = None  # record field -> the data's column name
    split: str | None = None  # for a `datasets` directory or a hub dataset
    revision: str | None = None  # for a hub dataset


def _check_info(info: SourceInfo) -> None:
    check_name(info.name, "--name")
    if not info.licence.strip() or info.licence.strip().lower() in {"none", "unknown"}:
        raise LaminaError(
            "every source needs a licence (an SPDX id such as cc-by-4.0, or `internal`)", "--licence"
        )
    if info.format not in SHAPES:
        raise LaminaError(f"unknown format {info.format!r}; expected one of {', '.join(SHAPES)}", "--format")
    check_columns(info.format, info.columns, "--column")
    if info.lawful_basis not in LAWFUL_BASES:
        raise LaminaError(f"{info.lawful_basis!r} is not one of {', '.join(LAWFUL_BASES)}", "--lawful-basis")
    if info.lawful_basis == "consent" and info.personal_data and not info.consent_ref:
        raise LaminaError("personal data held on consent needs a --consent-ref", "--consent-ref")
    if info.retain_until is not None:
        try:
            dt.date.fromisoformat(info.retain_until)
        except ValueError:
            raise LaminaError(f"{info.retain_until!r} is not a date (YYYY-MM-DD)", "--retain-until") from None


@dataclass
class _Scan:
    ref: Reference
    count: int
    sha: str  # of the bytes kept: the file itself, or the canonical JSONL made from other forms
    subject_ids: set[str]
    format: str  # the format the snapshot is parsed with
    read_as: dict | None  # how data that is not native JSONL was read (provenance)


def _canonical_lines(ref: Reference, info: SourceInfo) -> Iterator[tuple[bytes, Record]]:
    """Data that is not native JSONL as canonical JSONL records (chat or preference)."""
    kind = None
    for where, rec in iter_records(ref, info.format, info.columns):
        if kind not in (None, format_of(rec)):
            raise LaminaError(f"mixes {format_of(rec)} and {kind} records", where)
        kind = format_of(rec)
        yield (fsio.canonical_json(record_to_json(rec)) + "\n").encode(), rec


def scan_source(path: str | Path, info: SourceInfo) -> _Scan:
    """Validate every record; nothing is read from or written to the workspace, so bad data is
    refused before any key exists."""
    ref = reference(path, info.split, info.revision)
    count, subjects = 0, set()
    if is_native(ref, info.format, info.columns):
        for _, rec in iter_jsonl(ref.path, info.format):
            count += 1
            if rec.subject_id is not None:
                subjects.add(rec.subject_id)
        return _Scan(ref, count, fsio.sha256_file(ref.path), subjects, info.format, None)
    h, kind = hashlib.sha256(), "chat"
    for line, rec in _canonical_lines(ref, info):
        h.update(line)
        count, kind = count + 1, format_of(rec)
        if rec.subject_id is not None:
            subjects.add(rec.subject_id)
    read_as = ref.read_as() | {"shape": info.format, "columns": info.columns}
    if ref.kind not in ("hub", "datasets_dir"):
        read_as["file_sha256"] = fsio.sha256_file(ref.path)
    return _Scan(ref, count, h.hexdigest(), subjects, kind, read_as)


def _snapshot(scan: _Scan, info: SourceInfo, target: Path) -> None:
    """The encrypted raw copy: the file's bytes, or the canonical records made from it."""
    h = hashlib.sha256()
    with crypto.open_encrypted_writer(target) as w:
        if scan.read_as is None:
            with open(scan.ref.path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    w.write(block)
        else:
            for line, _ in _canonical_lines(scan.ref, info):
                h.update(line)
                w.write(line)
        if h.hexdigest() != scan.sha:
            raise LaminaError("the data changed while it was being registered; try again", scan.ref.ref)


_COMPARED = ("licence", "origin", "purpose", "lawful_basis", "format", "consent_ref", "retain_until", "personal_data")


def _earlier(sha: str, info: SourceInfo) -> catalog.Source | None:
    """The source already registered under this name, when it is these bytes with this
    metadata (a repeated command); None when the name is free; an error naming what differs."""
    with catalog.session() as s:
        src = s.scalar(select(catalog.Source).where(catalog.Source.name == info.name))
    if src is None:
        return None
    differ = [f"status ({src.status})"] if src.status != "active" else []
    if src.read_as:  # read from another form: compare the shape asked for, not the stored format
        src_format = json.loads(src.read_as).get("shape", src.format)
    else:
        src_format = src.format
    if sha != src.sha256:
        differ.append(f"content (sha256 {src.sha256[:12]}… registered, {sha[:12]}… now)")
    for key in _COMPARED:
        old, new = src_format if key == "format" else getattr(src, key), getattr(info, key)
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
    _check_info(info)
    scan = scan_source(path, info)
    earlier = _earlier(scan.sha, info)
    if earlier is not None:
        return earlier, False
    return _insert(scan, info), True


@exclusive_call
def add_source(path: str | Path, info: SourceInfo) -> catalog.Source:
    """Register `path` (any data reference: data/readers.py) as a source. All or nothing."""
    _check_info(info)
    scan = scan_source(path, info)
    with catalog.session() as s:
        if s.scalar(select(catalog.Source).where(catalog.Source.name == info.name)) is not None:
            raise LaminaError(f"a source named {info.name!r} already exists", "--name")
    return _insert(scan, info)


def _insert(scan: _Scan, info: SourceInfo) -> catalog.Source:
    """The first write: keys (made on first use), the encrypted snapshot, the catalog rows."""
    key = crypto.pseudonym_key()
    subjects = {catalog.subject_hash(sid, key) for sid in scan.subject_ids}
    count, sha, ref = scan.count, scan.sha, scan.ref
    rel = Path("catalog") / "raw" / f"{info.name}-r1-{sha[:12]}.enc"
    target = workspace.home() / rel
    _snapshot(scan, info, target)
    faults.point("data.add.snapshot")
    try:
        with catalog.session() as s:
            src = catalog.Source(
                name=info.name, path=f"hub:{ref.ref}" if ref.kind == "hub" else str(ref.path.resolve()),
                format=scan.format, sha256=sha, records=count,
                revision=1, snapshot=str(rel), licence=info.licence.strip(), origin=info.origin,
                purpose=info.purpose, lawful_basis=info.lawful_basis, consent_ref=info.consent_ref,
                retain_until=info.retain_until, personal_data=info.personal_data, added_at=catalog.now(),
                added_by=workspace.user(), status="active",
                read_as=json.dumps(scan.read_as, sort_keys=True) if scan.read_as else None,
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


def iter_pending_records(src: catalog.Source) -> Iterator[Record]:
    """The records of a source planned but not yet registered, read from where they are (its
    `read_as` says how, for data that is not native JSONL)."""
    if not src.read_as:
        yield from (rec for _, rec in iter_jsonl(src.path, src.format))
        return
    how = json.loads(src.read_as)
    ref = reference(src.path, how.get("split"), how.get("revision"))
    yield from (rec for _, rec in iter_records(ref, how["shape"], how.get("columns")))


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
