"""The seam to training: a recipe's data, taken in and licence-checked, as masked records.

Raw files named in a recipe go through intake like any other source (registered with the
licence and provenance the recipe declares, refused without them: origin, purpose and lawful
basis, as `lamina data add` asks); a named dataset version is used as is.
Either way training sees only the masked version, and only if every source's licence is one
the recipe accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lamina import fsio, workspace
from lamina.data import catalog, ops
from lamina.data.intake import unfinished
from lamina.data.intake.pipeline import sources_of, stage_intake, version_hash
from lamina.data.intake.sources import SourceInfo, add_source, scan_source
from lamina.errors import LaminaError
from lamina.governance import at_rest
from lamina.names import to_name
from lamina.recipe import LAWFUL_BASES, ProvenanceSpec, Recipe


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    version_id: str
    manifest: dict[str, Any]
    path: Path
    # Writes the version and its new sources; None once written (or when nothing is new).
    pending: Callable[[], None] | None = None

    @property
    def format(self) -> str:
        """The formats.parse_record format the records are in."""
        kind = self.manifest.get("kind")
        return kind if kind in ("preference", "unpaired") else "chat"

    def commit(self) -> None:
        if self.pending is not None:
            self.pending()
            self.pending = None

    def discard(self) -> None:
        staged = getattr(self.pending, "staged", None)
        if staged is not None:
            staged.discard()
        self.pending = None


@dataclass
class _Planned:
    """A recipe file's source: a catalog row, or (id None) a file to register on commit."""

    source: catalog.Source
    role: str
    file: str | None = None  # any data reference (data/readers.py)
    info: SourceInfo | None = None


def _check_declared(path: str, licence: str | None, recipe: Recipe) -> str:
    if not licence:
        raise LaminaError(
            f"raw data file {path} has no licence; declare it as `data.licence` (or take it in with "
            "`lamina data add` and name the version in `data.dataset`)",
            "data.licence",
        )
    accepted = {a.lower() for a in recipe.intake.licences}
    if licence.lower() not in accepted:
        raise LaminaError(
            f"licence {licence!r} is not accepted by this recipe (intake.licences: "
            f"{', '.join(recipe.intake.licences) or 'none'}); refusing to take the data in",
            "data.licence",
        )
    return licence


def _provenance(path: str, recipe: Recipe) -> ProvenanceSpec:
    """What `lamina data add` asks of a source, from the recipe: never a lawful basis assumed."""
    if recipe.data.provenance is None:
        raise LaminaError(
            f"raw data file {path} has no provenance; declare `data.provenance` with origin, purpose and "
            f"lawful_basis (one of {', '.join(LAWFUL_BASES)}), as `lamina data add` records them (or take it "
            "in with `lamina data add` and name the version in `data.dataset`)",
            "data.provenance",
        )
    return recipe.data.provenance


def _plan_source(path: str, recipe: Recipe, role: str) -> _Planned:
    """The catalog source for a raw recipe file, checked in full and written nowhere: an
    active source of the same bytes under the same licence and lawful basis is reused."""
    licence = _check_declared(path, recipe.data.licence, recipe).strip()
    prov = _provenance(path, recipe)
    spec = recipe.data
    split = spec.split if role == "train" else None  # an eval split is named in its ref: hub:id:test
    retain = prov.retain_until.isoformat() if prov.retain_until else None
    info = SourceInfo(name="", licence=licence, origin=prov.origin, purpose=prov.purpose,
                      lawful_basis=prov.lawful_basis, consent_ref=prov.consent_ref, retain_until=retain,
                      personal_data=prov.personal_data, format=spec.format, columns=spec.columns, split=split,
                      revision=spec.revision)  # fmt: skip
    scan = scan_source(path, info)  # every record valid, or the record named; nothing written
    ref, sha = scan.ref, scan.sha
    file = Path(ref.ref.rstrip("/").replace("/", "_")) if ref.kind == "hub" else ref.path
    same, taken = [], set()
    if (workspace.home() / "catalog" / "catalog.db").is_file():  # a new workspace gets no catalog yet
        with catalog.session() as s:
            same = list(s.scalars(select(catalog.Source).where(catalog.Source.sha256 == sha,
                                                               catalog.Source.status == "active")))
            stem = f"{to_name(file.stem)}-%"
            taken = set(s.scalars(select(catalog.Source.name).where(catalog.Source.name.like(stem))))
    _check_same(file, same, licence, prov)
    for src in same:
        shape = json.loads(src.read_as).get("shape") if src.read_as else src.format
        if shape == spec.format and (json.loads(src.read_as).get("columns") if src.read_as else None) == spec.columns:
            return _Planned(src, role)
    name = f"{to_name(file.stem)}-{sha[:10]}"
    name = name if name not in taken else f"{name}-{to_name(licence)}"
    where = f"dataset hub:{ref.ref}" if ref.kind == "hub" else f"file {ref.path.resolve()}"
    info.name, info.origin = name, f"{prov.origin} ({where}, named by recipe {recipe.name!r})"
    pending = catalog.Source(name=name, path=where.split(" ", 1)[1], format=scan.format, sha256=sha,
                             records=scan.count, revision=1, licence=licence, status="active", retain_until=None,
                             read_as=json.dumps(scan.read_as, sort_keys=True) if scan.read_as else None)
    return _Planned(pending, role, str(path), info)


def _check_same(file: Path, same: list[catalog.Source], licence: str, prov: ProvenanceSpec) -> None:
    """One file has one licence and one lawful basis: the same bytes taken in before under
    others are an error naming both."""
    for src in same:
        if src.licence.lower() != licence.lower():
            raise LaminaError(
                f"{file} was taken in before as source {src.name!r} under licence {src.licence!r}, and this "
                f"recipe declares {licence!r}; one file has one licence (fix `data.licence`, or withdraw "
                f"{src.name!r} first)",
                "data.licence",
            )
    for src in same:
        if src.lawful_basis != prov.lawful_basis:
            raise LaminaError(
                f"{file} was taken in before as source {src.name!r} held on lawful basis {src.lawful_basis!r}, and "
                f"this recipe declares {prov.lawful_basis!r}; fix `data.provenance.lawful_basis`, or withdraw "
                f"{src.name!r} first",
                "data.provenance.lawful_basis",
            )


def _register(plan: _Planned, user: str | None = None) -> catalog.Source:
    if plan.file is None:
        return plan.source
    user = user or workspace.user()
    try:
        # The same gate as `lamina data add`: one audit entry, settled by the next command if killed.
        with ops.operation("data.add", user, unfinished.PROBES, source=plan.info.name, by="train"):
            src = add_source(plan.file, plan.info)
    except LaminaError:
        # Another run may have registered the same file a moment ago: use its registration.
        with catalog.session() as s:
            src = s.scalar(select(catalog.Source).where(catalog.Source.name == plan.info.name))
        if src is None or src.licence != plan.info.licence or src.status != "active":
            raise
    if src.sha256 != plan.source.sha256:
        raise LaminaError("the file changed while it was being taken in; run again", str(plan.file))
    return src


def check_licences(version_id: str, accepted: list[str]) -> None:
    ok = {a.lower() for a in accepted}
    for src, _ in sources_of(version_id):
        if not src.licence or src.licence.lower() not in ok:
            raise LaminaError(
                f"licence {src.licence!r} of source {src.name!r} is not accepted by this recipe "
                f"(intake.licences: {', '.join(accepted) or 'none'}); refusing to train",
                f"source {src.name}",
            )


def _read(path: Path) -> list[dict[str, Any]]:
    if at_rest.locate(path) is None:
        raise LaminaError(
            "this dataset version's records were deleted (withdrawn); use its successor", str(path)
        )
    return [json.loads(line) for line in at_rest.iter_lines(path) if line.strip()]  # decrypted if stored so


def resolved(recipe: Recipe) -> Recipe:
    """The recipe with its data rules applied, so that saving and reloading it (as a resumed
    run does) cannot change what it means: a named eval file is the held-out set, so the hash
    split carves nothing more out of train (eval_ratio 0) unless the recipe set a ratio."""
    if recipe.data.eval and "eval_ratio" not in recipe.intake.model_fields_set:
        intake = recipe.intake.model_copy(update={"eval_ratio": 0.0})
        return recipe.model_copy(update={"intake": intake})
    return recipe


def prepare_for_training(recipe: Recipe, defer_commit: bool = False) -> PreparedData:
    """Masked, licence-checked train and eval records for `recipe`.

    Raw files are validated and taken in completely before anything is written; with
    `defer_commit` the result is written only by `PreparedData.commit()`, so that a caller
    can run its own checks (tokenisation, the base model) first.
    """
    spec = recipe.data
    if spec.dataset:
        with catalog.session() as s:
            row = catalog.resolve_version(s, spec.dataset)
        if row.status == "withdrawn":
            raise LaminaError(
                f"dataset version {row.id[:12]} was withdrawn ({row.note}); name its successor",
                "data.dataset",
            )
        check_licences(row.id, recipe.intake.licences)
        path = workspace.home() / row.path
        manifest = fsio.read_json(path / "manifest.json")
        train, held = _read(path / "train.jsonl"), _read(path / "eval.jsonl")
        check_version(row.id, path, manifest, len(train), len(held))
        return PreparedData(train, held, row.id, manifest, path)
    from lamina.governance import access

    user = access.require("data.write")  # what training takes in passes the gate `data add` does
    plans = [_plan_source(spec.train, recipe, "train")]
    if spec.eval:
        plans.append(_plan_source(spec.eval, recipe, "eval"))
    intake = resolved(recipe).intake
    roles = ["auto", "eval"]
    staged = stage_intake(recipe.name, [(p.source, roles[i]) for i, p in enumerate(plans)], intake,
                          eval_format=spec.format)

    def commit() -> None:
        try:
            staged.store_key()  # first: registering a source hashes its subjects with this key
            with ops.exclusive():
                sources = [(_register(p, user), roles[i]) for i, p in enumerate(plans)]
                names = [src.name for src, _ in sources]
                with ops.operation("data.intake", user, unfinished.PROBES, name=recipe.name, sources=names,
                                   by="train"):
                    prepared.manifest = staged.commit(sources).manifest
        finally:
            staged.discard()

    commit.staged = staged  # type: ignore[attr-defined]
    manifest = {"name": recipe.name, "kind": staged.stats.kind}  # the whole one once committed
    prepared = PreparedData(staged.records("train"), staged.records("eval"), staged.version_id, manifest,
                            workspace.home() / "datasets" / staged.version_id, commit)
    if not defer_commit:
        prepared.commit()
    return prepared


def check_version(vid: str, path: Path, manifest: dict, n_train: int, n_eval: int) -> None:
    """A version is named by the sha256 of its records: recompute it before training on them
    (an edited answer, deleted records), and hold the manifest to the catalog (counts,
    licences), so nothing edited in the workspace since intake is trained on unnoticed."""
    actual = version_hash(path)
    if actual != vid:
        raise LaminaError(
            f"records changed since intake: they hash to {actual[:12]}, not the version's {vid[:12]}; "
            "take the source in again (`lamina data intake`) instead of editing a version",
            str(path),
        )
    counts = manifest.get("counts") or {}
    if manifest.get("id") != vid or counts.get("train") != n_train or counts.get("eval") != n_eval:
        raise LaminaError(
            f"manifest does not describe version {vid[:12]} ({n_train} train, {n_eval} eval records)",
            str(path / "manifest.json"),
        )
    recorded = {src.name: src.licence for src, _ in sources_of(vid)}
    for src in manifest.get("sources") or []:
        if src.get("name") in recorded and src.get("licence") != recorded[src["name"]]:
            raise LaminaError(
                f"manifest licence {src.get('licence')!r} of source {src['name']!r} differs from the "
                f"catalog's {recorded[src['name']]!r}",
                str(path / "manifest.json"),
            )
