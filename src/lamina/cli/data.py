"""`lamina data ...`: sources, intake into dataset versions, withdrawal, retention, PII report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

import typer

from lamina.cli.app import app
from lamina.data.intake.sources import LAWFUL_BASES
from lamina.data.shapes import SHAPES
from lamina.recipe import PiiSpec

# Closed sets as choices, from where they are defined (help lists them; typos are refused).
LawfulBasis = Literal[LAWFUL_BASES]
Shape = Literal[SHAPES]
YesNo = Literal["yes", "no"]
NerMode = PiiSpec.model_fields["ner"].annotation

data_app = typer.Typer(help="Data sources, intake, dataset versions, withdrawal.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _emit(obj, as_json: bool, text: str) -> None:
    from lamina.cli.app import out

    if as_json:
        out.print_json(json.dumps(obj, default=str))
    else:
        out.print(text, highlight=False, markup=False, soft_wrap=True)


def _intake_spec(recipe: Path | None):
    from lamina.recipe import IntakeSpec, load_recipe

    return load_recipe(recipe).intake if recipe else IntakeSpec()


@data_app.command("add")
def add(
    file: str = typer.Argument(
        ...,
        help="JSONL, JSON (array), Parquet, CSV or TSV file; a `datasets` save_to_disk directory; or "
        "hub:owner/name (a Hugging Face dataset, through `datasets`).",
    ),
    name: str = typer.Option(..., "--name", help="Name of the source in the catalog (no '/')."),
    licence: str = typer.Option(..., "--licence", help="SPDX id (cc-by-4.0, mit, ...) or `internal`."),
    origin: str = typer.Option(..., "--origin", help="URL or description of where the data came from."),
    purpose: str = typer.Option(..., "--purpose", help="What the data is used for (recorded as provenance)."),
    lawful_basis: LawfulBasis = typer.Option(..., "--lawful-basis", help="Lawful basis for holding the data."),
    consent_ref: str = typer.Option(
        None,
        "--consent-ref",
        help="Reference to the consent record (needed for personal data held on consent).",
    ),
    retain_until: str = typer.Option(
        None, "--retain-until", help="YYYY-MM-DD; `lamina data sweep` removes it after."
    ),
    personal_data: YesNo = typer.Option("yes", "--personal-data", help="Whether the records hold personal data."),
    fmt: Shape = typer.Option("chat", "--format", help="Shape of the records (see the recipe's data.format)."),
    column: list[str] = typer.Option(
        [],
        "--column",
        help="FIELD=COLUMN: read a record field from your column (repeatable), "
        "e.g. --column prompt=question.",
    ),
    split: str = typer.Option(
        None, "--split", help="Split of a hub dataset or datasets directory (default train)."
    ),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit of a hub dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Register a source in the workspace catalog (validated, raw copy encrypted at rest)."""
    from lamina.data import ops
    from lamina.data.intake import unfinished
    from lamina.data.intake.sources import SourceInfo, register_source
    from lamina.errors import LaminaError
    from lamina.governance import access

    columns = {}
    for item in column:
        field, sep, col = item.partition("=")
        if not sep or not field.strip() or not col.strip():
            raise LaminaError(f"{item!r} is not FIELD=COLUMN", "--column")
        columns[field.strip()] = col.strip()
    user = access.require("data.write")
    info = SourceInfo(
        name, licence, origin, purpose, lawful_basis, fmt, consent_ref, retain_until, personal_data == "yes",
        columns or None, split, revision,
    )  # fmt: skip
    with ops.operation("data.add", user, unfinished.PROBES, source=name):  # a repeat commits nothing: no entry
        src, new = register_source(file, info)
    said = "" if new else " (already registered with these bytes and metadata; nothing changed)"
    _emit(src.provenance() | {"new": new}, as_json,
          f"source {src.name}: {src.records} records, sha256 {src.sha256[:16]}…{said}")


@data_app.command("intake")
def intake(
    sources: list[str] = typer.Argument(..., help="Source names (hash-split into train/eval)."),
    name: str = typer.Option(..., "--name", help="Dataset name; each intake makes a new version of it."),
    eval_sources: list[str] = typer.Option([], "--eval-source", help="Sources used only as eval."),
    recipe: Path = typer.Option(None, "--recipe", help="Take the `intake:` settings from this recipe."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Take sources in as a dataset version (normalised, PII-masked, deduplicated, carded)."""
    from lamina.data import catalog, ops
    from lamina.data.intake import unfinished
    from lamina.data.intake.pipeline import run_intake
    from lamina.governance import access, journal
    from lamina.names import check_name
    from lamina.progress import task

    user = access.require("data.write")
    check_name(name, "--name")
    spec = _intake_spec(recipe)
    with catalog.session() as s:
        picked = [(catalog.get_source(s, n), "auto") for n in sources] + [
            (catalog.get_source(s, n), "eval") for n in eval_sources
        ]
    total = sum(src.records for src, _ in picked)
    # A retry of an intake a kill interrupted after its change is told so, not taken in again.
    key = journal.args_key("data.intake", user=user, name=name, sources=sources, eval_sources=eval_sources,
                           recipe=str(recipe) if recipe else None)
    with ops.exclusive(unfinished.PROBES) as settled:
        if _retried_intake(journal.settled_by_key(settled, key), name, as_json):
            return
        with (
            task("intake", total, enabled=not as_json) as advance,
            ops.operation("data.intake", user, unfinished.PROBES, key=key, name=name,
                          sources=[s.name for s, _ in picked]),
        ):
            result = run_intake(name, picked, spec, progress=advance)
    m = result.manifest
    said = "" if result.new else " (these records were taken in before; nothing new written)"
    text = (
        f"dataset {name} version {result.version_id}{said}\n  {m['counts']['train']} train, {m['counts']['eval']} eval; "
        f"PII found {m['steps']['pii']['found']}\n  card: {result.path / 'README.md'}"
    )
    uncovered = m["steps"]["pii"].get("uncovered")
    if uncovered:
        from lamina.console import console
        from lamina.data.intake.pii import NER_INSTALL

        warning = (f"WARNING: {', '.join(uncovered)} not masked: no NER model is installed ({NER_INSTALL}; "
                   "or drop them from intake.pii.entities)")  # fmt: skip
        if as_json:  # stdout is the JSON; the warning still reaches whoever runs it
            console.print(warning, style="bold yellow", highlight=False, markup=False, soft_wrap=True)
        text += f"\n  {warning}"
    _emit(m, as_json, text)


def _retried_intake(done: dict | None, name: str, as_json: bool) -> bool:
    """Report an intake the settle just finished for this very command (its retry); True if so."""
    if done is None:
        return False
    version = done["details"].get("version")
    _emit({"already_done": True, "name": name, "version_id": version}, as_json,
          f"already done (finished after an interruption): dataset {name} version {version}")
    return True


@data_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")):
    """Sources and dataset versions in the catalog."""
    from sqlalchemy import select

    from lamina.data import catalog

    with catalog.session() as s:
        srcs = [src.provenance() | {"status": src.status} for src in s.scalars(select(catalog.Source))]
        vers = [
            {
                k: getattr(v, k)
                for k in ("id", "name", "status", "created_at", "train", "eval", "parent", "note")
            }
            for v in s.scalars(select(catalog.Version).order_by(catalog.Version.created_at))
        ]
        retrain = [
            {"run": r.run, "dataset_version": r.dataset_version, "reason": r.reason, "at": r.at}
            for r in s.scalars(select(catalog.RetrainRequired).order_by(catalog.RetrainRequired.id))
        ]
    lines = [
        f"source  {s['name']:<24} {s['status']:<8} {s['records']:>8} records  {s['licence']}" for s in srcs
    ]
    lines += [
        f"version {v['id'][:12]} {v['name']:<16} {v['status']:<10} {v['train']} train / {v['eval']} eval"
        for v in vers
    ]
    lines += [f"retrain {r['run']} (trained on {r['dataset_version'][:12]}): {r['reason']}" for r in retrain]
    _emit(
        {"sources": srcs, "versions": vers, "retrain_required": retrain},
        as_json,
        "\n".join(lines) or "the catalog is empty",
    )


@data_app.command("show")
def show(
    version: str = typer.Argument(..., help="Version id, id prefix, or dataset name."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """A dataset version's manifest and where its card is."""
    from lamina import fsio, workspace
    from lamina.data import catalog

    with catalog.session() as s:
        row = catalog.resolve_version(s, version)
        names = catalog.names_of(s, row.id) or [row.name]
    path = workspace.home() / row.path
    m = fsio.read_json(path / "manifest.json")
    text = (
        f"dataset {', '.join(names)} version {m['id']} ({row.status})\n  {m['counts']['train']} train, "
        f"{m['counts']['eval']} eval; PII found {m['steps']['pii']['found']}\n  card: {path / 'README.md'}"
    )
    _emit(m | {"status": row.status, "names": names, "card": str(path / "README.md")}, as_json, text)


@data_app.command("forget")
def forget(
    subject_id: str = typer.Option(
        ..., "--subject-id", help="The data subject's id as it appears in the records."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Remove a data subject's records everywhere; list the runs that must be retrained."""
    from lamina.governance import access
    from lamina.registry.withdrawal import forget_subject

    user = access.require("data.forget")
    report = forget_subject(subject_id, user)  # audited there, once, even across a kill
    _emit(report.to_json(), as_json, _withdrawal_text(report))


@data_app.command("sweep")
def sweep_(
    today: str = typer.Option(None, "--today", help="Pretend today is YYYY-MM-DD (for audits)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Remove sources past their retention date, as a withdrawal."""
    from lamina.errors import LaminaError
    from lamina.governance import access
    from lamina.registry.withdrawal import sweep

    user = access.require("data.forget")
    try:
        day = dt.date.fromisoformat(today) if today else None
    except ValueError:
        raise LaminaError(f"{today!r} is not a date (YYYY-MM-DD)", "--today") from None
    report = sweep(day, user)  # audited there, once, even across a kill
    _emit(report.to_json(), as_json, _withdrawal_text(report))


def _withdrawal_text(report) -> str:
    from lamina import workspace

    lines = [("already done (finished after an interruption): " if report.already_done else "") + report.reason]
    lines += [f"  source {s['name']}: {s['removed_records']} records removed" for s in report.sources]
    for v in report.versions:
        new = v["new"][:12] if v["new"] else "none (nothing left)"
        lines.append(f"  version {v['old'][:12]} ({v['name']}) -> {new}")
    lines += [
        f"  RETRAIN REQUIRED: run {r['run']} (trained on {r['dataset_version'][:12]})" for r in report.runs
    ]
    successor = {v["old"]: v["new"] for v in report.versions}
    trained_on = {r["run"]: r["dataset_version"] for r in report.runs}
    for m in report.models:
        aliases = ", ".join(m.get("aliases") or []) or "no alias"
        lines.append(f"  RETRAIN REQUIRED: model {m['version']} ({aliases}) from run {m.get('run_id')}")
        name = m["version"].split("/")[0]
        for alias in m.get("aliases") or []:
            lines.append(f'    roll back: lamina rollback {name} --alias {alias} --reason "trained on withdrawn records"')
        if m.get("run_id"):
            recipe = workspace.home() / "runs" / m["run_id"] / "recipe.yaml"
            # The recipe names the withdrawn version, which training refuses: name its successor.
            new = successor.get(trained_on.get(m["run_id"]))
            data = f" data.dataset={new}" if new and _names_dataset(recipe) else ""
            lines.append(f"    retrain:   lamina train {recipe}{data}   (promotion is refused until then)")
    if report.lineage_note:
        lines.append(f"  note: {report.lineage_note}")
    if len(lines) == 1:
        lines.append("  nothing held for it")
    return "\n".join(lines)


def _names_dataset(recipe) -> bool:
    import yaml

    data = (yaml.safe_load(recipe.read_text()) or {}).get("data") if recipe.is_file() else None
    return bool((data or {}).get("dataset"))


@data_app.command("pii-report")
def pii_report(
    recipe: Path = typer.Option(None, "--recipe", help="Use this recipe's `intake.pii` settings."),
    n: int = typer.Option(1000, "--n", help="Labelled texts to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated labelled texts."),
    ner: NerMode = typer.Option(None, "--ner", help="Override intake.pii.ner."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Recall and precision per entity of the configured analyzer on the labelled synthetic set."""
    from lamina.data.intake.pii_report import report_for
    from lamina.errors import LaminaError
    from lamina.recipe import PiiSpec

    spec = _intake_spec(recipe).pii
    if ner:
        if ner not in ("auto", "off", "required"):
            raise LaminaError(f"{ner!r} is not one of auto, off, required", "--ner")
        spec = PiiSpec.model_validate({**spec.model_dump(), "ner": ner})
    if n < 1:
        raise LaminaError("must be at least 1", "--n")
    rows, meta = report_for(spec, n, seed)
    if as_json:
        _emit({"entities": rows, **meta}, True, "")
        return
    from rich.table import Table

    from lamina.cli.app import out

    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ci = lambda v: "—" if v is None else f"{v[0]:.3f}–{v[1]:.3f}"  # noqa: E731
    table = Table("entity", box=None, pad_edge=False)
    for column in ("gold", "recall", "95% CI", "precision", "95% CI", "masked"):
        table.add_column(column, justify="right")
    for e, r in rows.items():
        table.add_row(e, str(r["gold"]), fmt(r["recall"]), ci(r["recall_ci95"]), fmt(r["precision"]),
                      ci(r["precision_ci95"]), fmt(r["masked"]))  # fmt: skip
    out.print(f"analyzer: {', '.join(meta['active'])}; NER: {meta['ner']}", highlight=False, soft_wrap=True)
    out.print(table, highlight=False)
    if meta["uncovered"]:
        out.print(f"not covered (no NER model installed): {', '.join(meta['uncovered'])}", highlight=False)
