"""Intake: sources -> one dataset version (normalised, PII-masked, deduplicated, split,
checked for contamination, hashed, carded), streamed in bounded memory.

Pass 1 streams every source record through the workers (normalise + mask), drops duplicates,
and splits by a hash of the masked record into `eval.jsonl` and a staging train file while it
indexes eval n-grams. Pass 2 reads the staging file back and drops (or flags) training
records that overlap an eval set. The version id is the sha256 of the canonical records;
the directory appears atomically under `<workspace>/datasets/<id>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from lamina import faults, fsio, workspace
from lamina.data import catalog
from lamina.data.dataset_card import render_card
from lamina.data.formats import Example, format_of, record_to_json
from lamina.data.intake.contamination import EvalIndex
from lamina.data.intake.dedup import Deduper
from lamina.data.intake.normalize import content_text
from lamina.data.intake.parallel import batched, ordered_map, process_batch, worker_count
from lamina.data.intake.pii import active_entities
from lamina.data.intake.sources import iter_pending_records, iter_source_records
from lamina.data.ops import StageOwner, exclusive_call, new_stage, release_stage
from lamina.data.shapes import iter_records
from lamina.errors import LaminaError
from lamina.governance import at_rest, audit, crypto
from lamina.recipe import IntakeSpec


@dataclass
class IntakeResult:
    version_id: str
    name: str
    path: Path
    manifest: dict[str, Any]
    new: bool  # False when identical records already formed this version


@dataclass
class _Pass1:
    read: int = 0
    normalized: int = 0
    pii: Counter = field(default_factory=Counter)
    records_with_pii: int = 0
    exact: int = 0
    near: int = 0
    train: int = 0
    eval: int = 0
    kind: str | None = None
    eval_subjects: set[str] = field(default_factory=set)


def split_of(line: str, eval_ratio: float) -> str:
    """Deterministic split by the record's own hash: the same record always lands the same way."""
    h = int.from_bytes(hashlib.sha256(line.encode()).digest()[:8], "big")
    return "eval" if h / 2**64 < eval_ratio else "train"


def _tagged(sources: list[tuple[catalog.Source, str]], key: bytes, stats: _Pass1) -> Iterator[tuple]:
    for src, role in sources:
        records = iter_source_records(src) if src.id is not None else iter_pending_records(src)
        for rec in records:
            kind = "sft" if isinstance(rec, Example) else format_of(rec)  # preference or unpaired
            if stats.kind not in (None, kind):
                raise LaminaError(
                    f"mixes {kind} records with {stats.kind} records of other sources", src.name
                )
            stats.kind = kind
            subject = catalog.subject_hash(rec.subject_id, key) if rec.subject_id is not None else None
            rec.subject_id, rec.meta = None, {}  # identifiers stay in the catalog, hashed
            stats.read += 1
            yield (role, subject), record_to_json(rec)


def _pass1(sources, spec: IntakeSpec, key: bytes, stage: Path, progress: Callable[[int], None] | None):
    stats = _Pass1()
    dedup = Deduper(spec.dedup_threshold, spec.dedup_num_perm, spec.dedup_shingle)
    index = EvalIndex(spec.contamination_ngram)
    # Held-out sources go first: a record in both is then dropped as a duplicate from train,
    # and the held-out set stays whole.
    ordered = [x for x in sources if x[1] == "eval"] + [x for x in sources if x[1] != "eval"]
    batches = batched(_tagged(ordered, key, stats), spec.batch)
    initargs = (spec.model_dump_json(), key)
    with (
        open(stage / "train.stage", "w", encoding="utf-8") as tr,
        open(stage / "eval.jsonl", "w", encoding="utf-8") as ev,
    ):
        workers = worker_count(spec, sum(src.records for src, _ in sources))
        for results in ordered_map(process_batch, batches, workers, initargs):
            for (role, subject), rec, found, changed in results:
                stats.normalized += changed
                stats.pii.update(found)
                stats.records_with_pii += bool(found)
                dup = dedup.check(content_text(rec))
                if dup:
                    setattr(stats, dup, getattr(stats, dup) + 1)
                    continue
                line = fsio.canonical_json(rec)
                if role == "eval" or split_of(line, spec.eval_ratio) == "eval":
                    ev.write(line + "\n")
                    index.add(content_text(rec))
                    stats.eval += 1
                    if subject:
                        stats.eval_subjects.add(subject)
                else:
                    tr.write(json.dumps([subject, rec], ensure_ascii=False) + "\n")
                    stats.train += 1
            if progress:
                progress(len(results))
    return stats, index


def _index_eval_files(index: EvalIndex, spec: IntakeSpec, fmt: str, key: bytes) -> None:
    """Index the recipe's eval files, normalised and masked like the training records, so
    that a leaked record matches its masked copy."""
    if not spec.contamination_eval:
        return
    records = (
        ((None, None), record_to_json(rec))
        for path in spec.contamination_eval
        for _, rec in iter_records(path, fmt)
    )
    for results in ordered_map(process_batch, batched(records, spec.batch), 1, (spec.model_dump_json(), key)):
        for _, rec, _, _ in results:
            index.add(content_text(rec))


def _pass2(stage: Path, spec: IntakeSpec, index: EvalIndex) -> tuple[dict, set[str]]:
    flagged = removed = kept = 0
    subjects: set[str] = set()
    with (
        open(stage / "train.stage", encoding="utf-8") as f,
        open(stage / "train.jsonl", "w", encoding="utf-8") as out,
    ):
        for line in f:
            subject, rec = json.loads(line)
            if index.records and index.overlap(content_text(rec)) >= spec.contamination_threshold:
                flagged += 1
                if spec.remove_contaminated:
                    removed += 1
                    continue
            out.write(fsio.canonical_json(rec) + "\n")
            kept += 1
            if subject:
                subjects.add(subject)
    (stage / "train.stage").unlink()
    return {"flagged": flagged, "removed": removed, "train_after": kept}, subjects


def version_hash(directory: Path) -> str:
    """The version id: sha256 of the plaintext records, however they are stored."""
    h = hashlib.sha256()
    for split in ("train", "eval"):
        h.update(f"{split}\n".encode())
        for block in at_rest.iter_bytes(directory / f"{split}.jsonl"):
            h.update(block)
    return h.hexdigest()


@exclusive_call
def seal_versions() -> list[str]:
    """Encrypt the records of every dataset version still stored plain (when
    `security.encrypt_at_rest` is turned on); the ids stay, being hashes of the plaintext.
    Returns the versions sealed. Killed half-way, a version keeps a readable copy either way."""
    if not catalog.db_path().exists():
        return []
    with catalog.session() as s:
        rows = [(row.id, row.path) for row in s.scalars(select(catalog.Version).order_by(catalog.Version.created_at))]
    done = []
    for vid, rel in rows:
        plain = [workspace.home() / rel / f"{split}.jsonl" for split in ("train", "eval")]
        plain = [p for p in plain if p.is_file()]  # a withdrawn version has none left
        for p in plain:
            at_rest.seal_file(p)
        if plain:
            done.append(vid)
    if done:
        audit.record("data.encrypted", versions=done)
    return done


def _manifest(vid, name, sources, spec, stats: _Pass1, contam: dict, eval_files, parent) -> dict:
    pii = spec.pii
    return {
        "id": vid,
        "name": name,
        "created_at": catalog.now(),
        "created_by": workspace.user(),
        "kind": stats.kind,
        "parent": parent,
        "sources": [dict(src.provenance(), role=role) for src, role in sources],
        "steps": {
            "read": {"records": stats.read},
            "normalize": {"unicode_form": spec.unicode_form, "records_changed": stats.normalized},
            "pii": {
                "enabled": pii.enabled,
                "entities": pii.entities,
                "active": active_entities(pii) if pii.enabled else [],
                # Asked for but found by nothing (names and places without an NER model).
                "uncovered": [e for e in pii.entities if e not in active_entities(pii)] if pii.enabled else [],
                "operator": pii.operator,
                "score_threshold": pii.score_threshold,
                "ner": pii.ner,
                "custom": [c.model_dump() for c in pii.custom],
                "allow": len(pii.allow),
                "deny": {k: len(v) for k, v in pii.deny.items()},
                "found": dict(sorted(stats.pii.items())),
                "records_with_pii": stats.records_with_pii,
            },
            "dedup": {
                "threshold": spec.dedup_threshold,
                "num_perm": spec.dedup_num_perm,
                "shingle": spec.dedup_shingle,
                "exact_removed": stats.exact,
                "near_removed": stats.near,
            },
            "split": {"eval_ratio": spec.eval_ratio, "train": stats.train, "eval": stats.eval},
            "contamination": {
                "ngram": spec.contamination_ngram,
                "threshold": spec.contamination_threshold,
                "eval_files": [str(Path(p).resolve()) for p in eval_files],
                "remove": spec.remove_contaminated,
                **contam,
            },
        },
        "counts": {"train": contam["train_after"], "eval": stats.eval},
        "intake": spec.model_dump(mode="json"),
    }


def _check_usable(sources: list[catalog.Source]) -> None:
    today = dt.date.today()
    for src in sources:
        if src.status != "active":
            raise LaminaError(f"source was {src.status} ({src.note}); it cannot be taken in again", src.name)
        if src.retain_until and dt.date.fromisoformat(src.retain_until) < today:
            raise LaminaError(f"retention ended {src.retain_until}; run `lamina data sweep`", src.name)


@dataclass
class StagedIntake:
    """An intake computed in a staging directory and not yet written to the workspace:
    `commit` moves it into place and records it in the catalog; `discard` forgets it."""

    name: str
    spec: IntakeSpec
    stage: Path
    stats: _Pass1
    contam: dict
    subjects: set[str]
    version_id: str
    store_key: Callable[[], None] = lambda: None  # writes a pseudonym key made for this intake
    owner: StageOwner | None = None  # tells the next command's leftover sweep this stage is alive

    def records(self, split: str) -> list[dict[str, Any]]:
        with open(self.stage / f"{split}.jsonl", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    @exclusive_call
    def commit(self, sources: list[tuple[catalog.Source, str]], parent: str | None = None) -> IntakeResult:
        """Write the version (atomically) and register it; `sources` are the registered rows."""
        self.store_key()
        manifest = _manifest(self.version_id, self.name, sources, self.spec, self.stats, self.contam,
                             self.spec.contamination_eval, parent)
        fsio.write_json(self.stage / "manifest.json", manifest)
        fsio.write_text(self.stage / "README.md", render_card(manifest))
        target = workspace.subdir("datasets") / self.version_id
        new = not target.exists()
        if new:
            if at_rest.enabled():  # `security.encrypt_at_rest`: the records are stored encrypted
                for split in ("train", "eval"):
                    at_rest.seal_file(self.stage / f"{split}.jsonl")
            with fsio.atomic_dir(target) as d:
                for p in self.stage.iterdir():
                    shutil.move(p, d / p.name)  # a rename, unless the stage is on another disk
        _register(self.version_id, self.name, target, manifest, sources, self.subjects, parent)
        self.discard()
        return IntakeResult(self.version_id, self.name, target, fsio.read_json(target / "manifest.json"), new)

    def discard(self) -> None:
        release_stage(self.stage, self.owner)


class TooFewRecords(LaminaError):
    """Intake left fewer training records than `intake.min_train_records`."""


def _survivors(name: str, spec: IntakeSpec, stats: _Pass1, contam: dict) -> None:
    kept = contam["train_after"]
    if kept >= spec.min_train_records:
        return
    raise TooFewRecords(
        f"intake left {kept} training records of {stats.read} read ({stats.exact} exact and {stats.near} near "
        f"duplicates dropped, {stats.eval} sent to eval, {contam['removed']} contaminated removed); at least "
        f"{spec.min_train_records} needed (intake.min_train_records)",
        f"dataset {name}",
    )


def stage_intake(
    name: str,
    sources: list[tuple[catalog.Source, str]],
    spec: IntakeSpec,
    eval_format: str = "chat",
    progress: Callable[[int], None] | None = None,
) -> StagedIntake:
    """Compute the version `name` of `sources` (each with role `auto` = hash split, or `eval`)
    without writing to the workspace's state; refuses when too few training records survive.
    A source without a catalog id is a file not registered yet: it is read from its path."""
    if not sources:
        raise LaminaError("no sources to take in", name)
    names = [src.name for src, _ in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LaminaError(f"named more than once (a source is taken in once, as training or as eval): "
                          f"{', '.join(twice)}", f"source {twice[0]}")
    _check_usable([src for src, _ in sources])
    key, store_key = crypto.staged_pseudonym_key()
    stage, owner = new_stage()
    try:
        stats, index = _pass1(sources, spec, key, stage, progress)
        _index_eval_files(index, spec, eval_format, key)
        contam, subjects = _pass2(stage, spec, index)
        faults.point("data.intake.staged")
        _survivors(name, spec, stats, contam)
        subjects |= stats.eval_subjects
        return StagedIntake(name, spec, stage, stats, contam, subjects, version_hash(stage), store_key, owner)
    except BaseException:
        release_stage(stage, owner)
        raise


def run_intake(
    name: str,
    sources: list[tuple[catalog.Source, str]],
    spec: IntakeSpec,
    eval_format: str = "chat",
    parent: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IntakeResult:
    """Take `sources` (each with role `auto` = hash split, or `eval`) in as a version `name`."""
    staged = stage_intake(name, sources, spec, eval_format, progress)
    try:
        return staged.commit(sources, parent)
    finally:
        staged.discard()


def _register(vid, name, target, manifest, sources, subjects, parent) -> None:
    with catalog.session() as s:
        s.execute(update(catalog.Version).where(catalog.Version.name == name).values(status="superseded"))
        row = s.get(catalog.Version, vid)
        if row is None:
            row = catalog.Version(
                id=vid, name=name, path=str(target.relative_to(workspace.home())), created_at=manifest["created_at"],
                created_by=manifest["created_by"], train=manifest["counts"]["train"], eval=manifest["counts"]["eval"],
                parent=parent,
            )  # fmt: skip
            s.add(row)
            s.add_all(
                catalog.VersionSource(version_id=vid, source_id=src.id, revision=src.revision, role=role)
                for src, role in sources
            )
            s.add_all(catalog.VersionSubject(version_id=vid, subject=h) for h in sorted(subjects))
        row.status = "current"
        catalog.add_name(s, vid, name)  # the first name stays the row's; later ones are added
        for other in catalog.names_of(s, parent) if parent else []:
            catalog.add_name(s, vid, other)  # a rebuilt version (withdrawal) keeps every name
        catalog.stamp(s, version=vid)


def sources_of(version_id: str) -> list[tuple[catalog.Source, str]]:
    with catalog.session() as s:
        rows = s.execute(
            select(catalog.Source, catalog.VersionSource.role)
            .join(catalog.VersionSource, catalog.VersionSource.source_id == catalog.Source.id)
            .where(catalog.VersionSource.version_id == version_id)
            .order_by(catalog.Source.id)
        ).all()
        return [(src, role) for src, role in rows]
