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

from lamina import faults, fsio, rundir, workspace
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
    already_done: bool = False  # a retry of a withdrawal a kill interrupted and a later command finished

    KEYS = ("reason", "sources", "versions", "runs", "models", "lineage_note", "incidents")

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS} | ({"already_done": True} if self.already_done else {})

    @classmethod
    def from_json(cls, d: dict) -> WithdrawalReport:
        return cls(**{k: d[k] for k in cls.KEYS if k in d})


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


def _successor(version_id: str) -> str | None:
    """The version a withdrawal rebuilt from `version_id` (its parent), if one was made."""
    with catalog.session() as s:
        return s.scalars(select(catalog.Version.id).where(catalog.Version.parent == version_id)
                         .order_by(catalog.Version.created_at.desc())).first()


def _rebuild(version_ids: set[str], reason: str, exclude: set[int], report: WithdrawalReport) -> None:
    with catalog.session() as s:
        rows = [s.get(catalog.Version, v) for v in sorted(version_ids)]
    for row in rows:
        # An interrupted withdrawal may have rebuilt this one already: report it, purge it, move on.
        new_id = _successor(row.id) if row.status != "current" else None
        if new_id is None and row.status == "current":
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
        faults.point("data.withdraw.rebuilt")


def record_retrain_required(report: WithdrawalReport) -> WithdrawalReport:
    """Mark every run in `report` "retrain required" in the catalog."""
    with catalog.session() as s:
        marked = {(r.run, r.dataset_version) for r in s.scalars(
            select(catalog.RetrainRequired).where(catalog.RetrainRequired.reason == report.reason))}
        for run in report.runs:
            if (run["run"], run["dataset_version"]) in marked:
                continue  # marked by the interrupted run this one completes
            s.add(
                catalog.RetrainRequired(
                    run=run["run"],
                    dataset_version=run["dataset_version"],
                    reason=report.reason,
                    at=catalog.now(),
                )
            )
    return report


def subject_of(subject_id: str) -> str:
    """The subject's pseudonym: what an intent and the catalog hold instead of the id."""
    return catalog.subject_hash(subject_id, crypto.pseudonym_key())


def _subject_reason(subject: str) -> str:
    return f"subject withdrawal ({subject[:12]})"


def subject_versions(subject: str) -> list[str]:
    """The dataset versions that hold records of the subject (pseudonym) now."""
    with catalog.session() as s:
        return sorted(s.scalars(select(catalog.VersionSubject.version_id)
                                .where(catalog.VersionSubject.subject == subject)))


@exclusive_call
def remove_subject(subject: str, planned: set[str] = frozenset()) -> tuple[WithdrawalReport, set[str]]:
    """Remove every record of the subject (its pseudonym, `subject_of`) from sources and
    versions; list the runs (by their run.json) trained on them. Returns the report and the
    affected version ids. `planned`: versions an interrupted run of this withdrawal had found
    (rebuilt ones no longer hold the subject); what it finished is reported, not redone."""
    key = crypto.pseudonym_key()
    report = WithdrawalReport(_subject_reason(subject))
    with catalog.session() as s:
        srcs = list(
            s.scalars(
                select(catalog.Source)
                .join(catalog.SourceSubject, catalog.SourceSubject.source_id == catalog.Source.id)
                .where(catalog.SourceSubject.subject == subject)
            )
        )
    versions = set(subject_versions(subject)) | set(planned)
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
        faults.point("data.withdraw.source")
    for old in old_snapshots:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    _rebuild(versions, report.reason, set(), report)
    report.runs = runs_trained_on(versions)
    return report, versions


def expired_sources(today: dt.date) -> list[int]:
    """The ids of active sources whose retention ended before `today`."""
    with catalog.session() as s:
        return [
            src.id
            for src in s.scalars(select(catalog.Source).where(catalog.Source.status == "active"))
            if src.retain_until and dt.date.fromisoformat(src.retain_until) < today
        ]


@exclusive_call
def remove_expired(today: dt.date | None = None, planned: list[int] | None = None
                   ) -> tuple[WithdrawalReport, set[str]]:
    """Remove every active source whose retention date has passed, and rebuild what used it.
    Returns the report (runs found by their run.json) and the affected version ids.
    `planned`: the source ids an interrupted sweep chose (some already marked removed)."""
    today = today or dt.date.today()
    report = WithdrawalReport(f"retention sweep ({today.isoformat()})")
    ids = set(expired_sources(today) if planned is None else planned)
    with catalog.session() as s:
        expired = list(s.scalars(select(catalog.Source).where(catalog.Source.id.in_(ids))
                                 .order_by(catalog.Source.id)))
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
    faults.point("data.withdraw.source")
    for src in expired:
        with contextlib.suppress(FileNotFoundError):
            (workspace.home() / src.snapshot).unlink()
    _rebuild(versions, report.reason, ids, report)
    report.runs = runs_trained_on(versions)
    return report, versions


def plan(action: str, subject: str | None = None, today: dt.date | None = None) -> dict:
    """What a withdrawal is about to change, written into its intent before it starts: what
    lets the command that completes an interrupted one report everything it changed."""
    if action == "data.forget":
        with catalog.session() as s:
            names = sorted(s.scalars(
                select(catalog.Source.name)
                .join(catalog.SourceSubject, catalog.SourceSubject.source_id == catalog.Source.id)
                .where(catalog.SourceSubject.subject == subject)))
        return {"subject": subject, "planned_sources": names, "planned_versions": subject_versions(subject)}
    return {"today": today.isoformat(), "planned_sources": expired_sources(today)}


def resume(intent) -> tuple[WithdrawalReport, set[str]]:
    """Finish the data side of a withdrawal (`data.forget`, `data.sweep`) a kill interrupted:
    what is left is done now, and what was done before is reported from the catalog."""
    d = intent.details
    if intent.action == "data.forget":
        report, versions = remove_subject(d["subject"], set(d["planned_versions"]))
        redone = {x["name"] for x in report.sources}
        with catalog.session() as s:
            for name in d["planned_sources"]:
                row = s.scalars(select(catalog.Source).where(catalog.Source.name == name)).first()
                if name not in redone and row is not None:  # rewritten before the kill: count unknown
                    report.sources.append({"name": name, "removed_records": None, "revision": row.revision})
    else:
        report, versions = remove_expired(dt.date.fromisoformat(d["today"]), d["planned_sources"])
    return report, versions


def finish(intent) -> dict:
    """Complete an interrupted withdrawal from a data command (lamina.data.ops settles with
    this): the data side, and the runs found by their run.json marked "retrain required"."""
    report, _ = resume(intent)
    report.lineage_note = ("finished after an interruption by a command that does not ask the registry: "
                           "run `lamina lineage --dataset VERSION` for the models built on these versions")
    return record_retrain_required(report).to_json()
