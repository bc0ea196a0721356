"""The seam to training: a recipe's data, taken in and licence-checked, as masked records.

Raw files named in a recipe go through intake like any other source (registered with the
licence the recipe declares, refused without one); a named dataset version is used as is.
Either way training sees only the masked version, and only if every source's licence is one
the recipe accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lamina import fsio, workspace
from lamina.data import catalog
from lamina.data.intake.pipeline import run_intake, sources_of, version_hash
from lamina.data.intake.sources import SourceInfo, add_source
from lamina.errors import LaminaError
from lamina.recipe import Recipe


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    version_id: str
    manifest: dict[str, Any]
    path: Path

    @property
    def format(self) -> str:
        """The formats.parse_record format the records are in."""
        kind = self.manifest.get("kind")
        return kind if kind in ("preference", "unpaired") else "chat"


def _source_for_file(path: str, recipe: Recipe, role: str) -> catalog.Source:
    """The catalog source for a raw recipe file: reused when the same bytes were registered
    under the same licence, else registered now."""
    licence = recipe.data.licence
    if not licence:
        raise LaminaError(
            f"raw data file {path} has no licence; declare it as `data.licence` (or take it in with "
            "`lamina data add` and name the version in `data.dataset`)",
            "data.licence",
        )
    file = Path(path)
    if not file.is_file():
        raise LaminaError("no such data file", str(file))
    sha = fsio.sha256_file(file)
    name = f"{file.stem}-{sha[:10]}"
    with catalog.session() as s:
        src = s.scalar(select(catalog.Source).where(catalog.Source.name == name))
    if src is not None and src.status == "active" and src.licence == licence:
        return src
    if src is not None:
        name = f"{name}-{licence}"
    info = SourceInfo(
        name=name,
        licence=licence,
        origin=f"file {file.resolve()} named by recipe {recipe.name!r}",
        purpose=f"fine-tuning ({recipe.name}, {role} split)",
        lawful_basis="legitimate_interest",
        format=recipe.data.format,
    )
    try:
        return add_source(file, info)
    except LaminaError:
        # Another run may have registered the same file a moment ago: use its registration.
        with catalog.session() as s:
            src = s.scalar(select(catalog.Source).where(catalog.Source.name == name))
        if src is not None and src.sha256 == sha and src.licence == licence and src.status == "active":
            return src
        raise


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
    if not path.is_file():
        raise LaminaError(
            "this dataset version's records were deleted (withdrawn); use its successor", str(path)
        )
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prepare_for_training(recipe: Recipe) -> PreparedData:
    """Masked, licence-checked train and eval records for `recipe`."""
    spec = recipe.data
    if spec.dataset:
        with catalog.session() as s:
            row = catalog.resolve_version(s, spec.dataset)
        if row.status == "withdrawn":
            raise LaminaError(
                f"dataset version {row.id[:12]} was withdrawn ({row.note}); name its successor",
                "data.dataset",
            )
        vid, path = row.id, workspace.home() / row.path
    else:
        sources = [(_source_for_file(spec.train, recipe, "train"), "auto")]
        if spec.eval:
            sources.append((_source_for_file(spec.eval, recipe, "eval"), "eval"))
        intake = recipe.intake
        if spec.eval and "eval_ratio" not in intake.model_fields_set:
            # A named eval file is the held-out set; don't also carve one out of train.
            intake = intake.model_copy(update={"eval_ratio": 0.0})
        result = run_intake(recipe.name, sources, intake, eval_format=spec.format)
        vid, path = result.version_id, result.path
    check_licences(vid, recipe.intake.licences)
    manifest = fsio.read_json(path / "manifest.json")
    train, held = _read(path / "train.jsonl"), _read(path / "eval.jsonl")
    check_version(vid, path, manifest, len(train), len(held))
    return PreparedData(train, held, vid, manifest, path)


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
