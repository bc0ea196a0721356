"""Withdrawal and retention: remove a subject's records (or an expired source) everywhere.

The raw snapshot is rewritten without the records; every current dataset version that held
them is taken in again (a new version, parent = the old one); the old versions' record
files are deleted (their manifest and card stay, marked `withdrawn`), since a copy kept
"for reproducibility" would defeat the withdrawal; and every run trained on an affected
version is listed and marked "retrain required" in the catalog.

This module does the data side and finds runs by their run.json files; the entry points
`forget_subject` and `sweep`, which also ask the registry's lineage, are in
lamina.registry.withdrawal (the registry sits above data).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select

from lamina import fsio, rundir, workspace
from lamina.data import catalog
from lamina.data.intake.pipeline import TooFewRecords, run_intake, sources_of
from lamina.data.intake.sources import iter_source_lines
from lamina.data.ops import exclusive_call
from lamina.governance import crypto
from lamina.recipe import IntakeSpec


@dataclass
class WithdrawalReport:
    reason: str
    sources: list[dict] = field(default_factory=list)  # {name, removed_records, revision}
    versions: list[dict] = field(default_factory=list)  # {old, name, new | None}
    runs: list[dict] = field(default_factory=list)  # {run, path, dataset_version}
    models: list[dict] = field(default_factory=list)  # registered versions: {version, run_id, aliases, ...}
    lineage_note: str | None = None  # why the registry could not be asked, if it could not
    incidents: list[int] = field(default_factory=list)  # opened because served versions were reached

    def to_json(self) -> dict:
        keys = ("reason", "sources", "versions", "runs", "models", "lineage_note", "incidents")
        return {k: getattr(self, k) for k in keys}


def _rewrite_snapshot(src: catalog.Source, subject: str, key: bytes) -> tuple[str, str, int, int]:
    """Write a new encrypted snapshot without `subject`'s records: (relative path, sha256, kept, dropped)."""
    rel = Path("catalog") / "raw" / f"{src.name}-r{src.revision + 1}.enc"
    h, kept, dropped = hashlib.sha256(), 0, 0
    with crypto.open_encrypted_writer(workspace.home() / rel) as w:
        for raw, rec in iter_source_lines(src):
            if (
                rec is not None
                and rec.subject_id is not None
                and catalog.subject_hash(rec.subject_id, key) == subject
            ):
                dropped += 1
                continue
            kept += rec is not None
            h.update(raw)
            w.write(raw)
    return str(rel), h.hexdigest(), kept, dropped


def runs_trained_on(version_ids: set[str]) -> list[dict]:
    """Runs whose run.json names one of `version_ids` as its dataset version."""
    found = []
    for path in sorted(rundir.runs_root().glob(f"*/{rundir.RUN_JSON}")):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a run still being written; it has not trained on anything yet
        version = (run.get("data") or {}).get("dataset_version")
        if version in version_ids:
            found.append(
                {
                    "run": run.get("id") or path.parent.name,
                    "path": str(path.parent),
                    "dataset_version": version,
                }
            )
    return found


def _purge(version_id: str, reason: str) -> None:
    """Delete a superseded version's records; keep its manifest and card as the record of it."""
    with catalog.session() as s:
        row = s.get(catalog.Version, version_id)
        directory = workspace.home() / row.path
        row.status, row.note = "withdrawn", reason
        s.execute(delete(catalog.VersionSubject).where(catalog.VersionSubject.version_id == version_id))
    for name in ("train.jsonl", "eval.jsonl", "train.jsonl.enc", "eval.jsonl.enc"):  # stored plain or encrypted
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def _rebuild(version_ids: set[str], reason: str, exclude: set[int], report: WithdrawalReport) -> None:
    with catalog.session() as s:
        rows = [s.get(catalog.Version, v) for v in sorted(version_ids)]
    for row in rows:
        new_id = None
        if row.status == "current":
            manifest = fsio.read_json(workspace.home() / row.path / "manifest.json")
            spec = IntakeSpec.model_validate(manifest["intake"])
            sources = [
                (src, role)
                for src, role in sources_of(row.id)
                if src.id not in exclude and src.status == "active"
            ]
            try:
                new_id = run_intake(row.name, sources, spec, parent=row.id).version_id if sources else None
            except TooFewRecords:
                pass  # nothing usable is left: the version goes without a successor
        if new_id != row.id:
            _purge(row.id, reason)
        report.versions.append({"old": row.id, "name": row.name, "new": new_id})


def record_retrain_required(report: WithdrawalReport) -> WithdrawalReport:
    """Mark every run in `report` "retrain required" in the catalog."""
    with catalog.session() as s:
        for run in report.runs:
            s.add(
                catalog.RetrainRequired(
                    run=run["run"],
                    dataset_version=run["dataset_version"],
                    reason=report.reason,
                    at=catalog.now(),
                )
            )
    return report


@exclusive_call
def remove_subject(subject_id: str) -> tuple[WithdrawalReport, set[str]]:
    """Remove every record of `subject_id` from sources and versions; list the runs (by their
    run.json) trained on them. Returns the report and the affected version ids."""
    key = crypto.pseudonym_key()
    subject = catalog.subject_hash(subject_id, key)
    reason = f"subject withdrawal ({subject[:12]})"
    report = WithdrawalReport(reason)
    with catalog.session() as s:
        srcs = list(
            s.scalars(
                select(catalog.Source)
                .join(catalog.SourceSubject, catalog.SourceSubject.source_id == catalog.Source.id)
                .where(catalog.SourceSubject.subject == subject)
            )
        )
        versions = set(
            s.scalars(
                select(catalog.VersionSubject.version_id).where(catalog.VersionSubject.subject == subject)
            )
        )
    old_snapshots = []
    for src in srcs:
        rel, sha, kept, dropped = _rewrite_snapshot(src, subject, key)
        with catalog.session() as s:
            row = s.get(catalog.Source, src.id)
            old_snapshots.append(workspace.home() / row.snapshot)
            row.snapshot, row.sha256, row.records, row.revision = rel, sha, kept, row.revision + 1
            s.execute(
                delete(catalog.SourceSubject).where(
                    catalog.SourceSubject.source_id == src.id, catalog.SourceSubject.subject == subject
                )
            )
        report.sources.append({"name": src.name, "removed_records": dropped, "revision": src.revision + 1})
    for old in old_snapshots:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    _rebuild(versions, reason, set(), report)
    report.runs = runs_trained_on(versions)
    return report, versions


@exclusive_call
def remove_expired(today: dt.date | None = None) -> tuple[WithdrawalReport, set[str]]:
    """Remove every active source whose retention date has passed, and rebuild what used it.
    Returns the report (runs found by their run.json) and the affected version ids."""
    today = today or dt.date.today()
    report = WithdrawalReport(f"retention sweep ({today.isoformat()})")
    with catalog.session() as s:
        expired = [
            src
            for src in s.scalars(select(catalog.Source).where(catalog.Source.status == "active"))
            if src.retain_until and dt.date.fromisoformat(src.retain_until) < today
        ]
        ids = {src.id for src in expired}
        versions = set(
            s.scalars(
                select(catalog.VersionSource.version_id).where(catalog.VersionSource.source_id.in_(ids))
            )
        )
        for src in expired:
            src.status, src.note = "removed", f"retention ended {src.retain_until}"
            s.execute(delete(catalog.SourceSubject).where(catalog.SourceSubject.source_id == src.id))
            report.sources.append(
                {"name": src.name, "removed_records": src.records, "revision": src.revision}
            )
    for src in expired:
        with contextlib.suppress(FileNotFoundError):
            (workspace.home() / src.snapshot).unlink()
    _rebuild(versions, report.reason, ids, report)
    report.runs = runs_trained_on(versions)
    return report, versions
