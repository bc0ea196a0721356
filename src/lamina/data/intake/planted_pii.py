"""The demo's first step: plant fake PII into the bundled tickets, take them in, and measure
how much of the planted PII the configured analyzer found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lamina import fsio, workspace
from lamina.data import catalog, ops
from lamina.data.intake import unfinished
from lamina.data.intake.pii import Masker
from lamina.data.intake.pii_report import score
from lamina.data.intake.pipeline import run_intake
from lamina.data.intake.sources import SourceInfo, add_source
from lamina.data.pii_synth import LabelledText, plant_pii
from lamina.errors import LaminaError
from lamina.recipe import IntakeSpec


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LaminaError("no such data file", str(path))
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _source(path: Path, name: str) -> catalog.Source:
    sha = fsio.sha256_file(path)
    with catalog.session() as s:
        src = s.scalar(select(catalog.Source).where(catalog.Source.name == name))
    if src is not None and src.sha256 == sha and src.status == "active":
        return src
    if src is not None:
        name = f"{name}-{sha[:8]}"
    info = SourceInfo(
        name=name,
        licence="internal",
        origin="bundled synthetic support tickets with planted fake PII",
        purpose="demo: support-ticket field extraction",
        lawful_basis="contract",
    )
    with ops.operation("data.add", workspace.user(), unfinished.PROBES, source=name, by="demo"):
        return add_source(path, info)


def demo_intake(
    records_path: str | Path,
    eval_path: str | Path | None = None,
    spec: IntakeSpec | None = None,
    rate: float = 0.3,
    seed: int = 0,
    subjects: int = 50,
    name: str = "demo-tickets",
) -> dict[str, Any]:
    """Plant PII into `rate` of the chat records at `records_path` (each record gets one of
    `subjects` subject ids), take them in as dataset `name` (with `eval_path`, if given, as
    its eval split instead of a hash split), and report detection on the planted spans.
    Returns figures and paths for the demo to print; train on it with
    `data: {dataset: <version_id>}`."""
    spec = spec or IntakeSpec()
    if eval_path is not None and "eval_ratio" not in spec.model_fields_set:
        spec = spec.model_copy(update={"eval_ratio": 0.0})
    records = _read_records(Path(records_path))
    planted, labels = plant_pii(records, rate=rate, seed=seed)
    for i, rec in enumerate(planted):
        rec.setdefault("subject_id", f"customer-{i % subjects:03d}")
    path = workspace.subdir("demo") / "tickets-with-pii.jsonl"
    fsio.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in planted))
    sources = [(_source(path, name), "auto")]
    if eval_path is not None:
        sources.append((_source(Path(eval_path), f"{name}-eval"), "eval"))
    with ops.operation("data.intake", workspace.user(), unfinished.PROBES, name=name,
                       sources=[s.name for s, _ in sources], by="demo"):
        result = run_intake(name, sources, spec)
    # Score the analyzer on the planted messages as they stood before masking.
    by_message: dict[tuple[int, int], LabelledText] = {}
    for lab in labels:
        key = (lab["record"], lab["message"])
        item = by_message.setdefault(key, LabelledText(planted[key[0]]["messages"][key[1]]["content"]))
        item.spans.append((lab["start"], lab["end"], lab["entity"]))
    items = list(by_message.values())
    masker = Masker(spec.pii, b"\0" * 32)
    report = score(items, [masker.find(i.text) for i in items])
    return {
        "dataset": name,
        "version_id": result.version_id,
        "path": str(result.path),
        "card": str(result.path / "README.md"),
        "counts": result.manifest["counts"],
        "pii_found": result.manifest["steps"]["pii"]["found"],
        "planted": len(labels),
        "pii_report": report,
    }
