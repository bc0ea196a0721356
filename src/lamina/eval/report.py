"""The evaluation's outputs: report.json (every number), gate.json (the verdict the registry
reads) and report.html (one self-contained file: inline CSS and SVG, no scripts, no links).

The three are written together into one directory with `atomic_dir`, so a reader never sees
a verdict without its report.
"""

from __future__ import annotations

import functools
import json
import time
from importlib import resources
from pathlib import Path

from lamina import rundir
from lamina.eval import inputs, svg
from lamina.eval.metrics import deltas
from lamina.fsio import atomic_dir, sha256_file, write_json, write_text
from lamina.gates import METRICS, relative_only

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;color:#111;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f4f4f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:1.4rem;font-weight:700;padding:.8rem 1rem;border-radius:6px;margin:1rem 0}
.pass{background:#dcfce7;color:#14532d}.fail{background:#fee2e2;color:#7f1d1d}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}
pre{white-space:pre-wrap;background:#f8f8f8;padding:.3rem;margin:0;font-size:.8rem}.muted{color:#666;font-size:.85rem}
"""


# Metrics that live on a 0..1 scale (rates, accuracies, AUCs): their deltas share one axis.
RATES = frozenset(
    [f"task.{m}" for m in ("exact_match", "token_f1", "rouge_l", "mc_accuracy")]
    + [f"safety.{m}" for m in METRICS["safety"] if m != "pii_leaks"]
    + ["privacy.mia_auc", "privacy.mia_auc_calibrated", "judge.win_rate", "judge.position_consistency"]
)


# Which way is good, for the metrics on the delta chart: +1 higher is better, -1 lower is better.
BETTER = {m: 1 for m in RATES} | {
    "safety.unsafe_rate": -1, "safety.over_refusal_rate": -1, "safety.jailbreak_success": -1,
    "safety.injection_success": -1, "privacy.mia_auc": -1, "privacy.mia_auc_calibrated": -1,
}  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def training_history(run_dir: Path | None) -> list[dict]:
    path = (run_dir or Path("/nonexistent")) / rundir.METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write; the rest is still a curve
    return rows


def _data_provenance(data) -> dict:
    """Which files the numbers came from, with their sha256 (a `sources.Sources`)."""
    out = {}
    for key in ("eval", "train", "raw_train"):
        src = getattr(data, key)
        out[key] = None if src is None else {"path": src[0], "format": src[1], "sha256": sha256_file(src[0])}
    return out


def build(plan, results: dict, candidate: dict, checks: list, targets: list[tuple[str, str, Path]]) -> dict:
    """The report document; `plan` is a harness.Plan, `candidate` the candidate's SuiteResults."""
    created = _now()
    candidate_ref = {"run_id": (plan.run or {}).get("id"), "path": str(plan.candidate)}
    gate = gate_doc(plan.gates, plan.suites, candidate_ref, _champion(targets), results["candidate"], checks)
    gate["created"] = created
    run = plan.run or {}
    return {
        "created": created,
        "candidate": {"ref": plan.ref, "path": str(plan.candidate), "run_id": run.get("id")},
        "targets": [{"role": r, "ref": ref, "path": str(p)} for r, ref, p in targets],
        "suites": plan.suites,
        "spec": plan.spec.model_dump(mode="json"),
        "data": _data_provenance(plan.data),
        "results": results,
        "deltas": {
            "base": deltas(results["candidate"], results.get("base")),
            "champion": deltas(results["candidate"], results.get("champion")),
        },
        "gate": gate,
        "samples": {k: v.samples for k, v in candidate.items()},
        "notes": {k: v.notes for k, v in candidate.items()},
        "training": {
            "history": training_history(plan.candidate if plan.run else None),
            "run": {
                k: run.get(k) for k in ("id", "name", "method", "tokens", "steps", "train_seconds", "device")
            },
        },
        "seconds": round(time.time() - plan.started, 2),
    }


def gate_doc(gates: list, suites: list[str], candidate: dict, champion: dict | None, results: dict,
             checks: list) -> dict:
    """gate.json: the verdict, each check, and what it was computed against."""
    return {
        "passed": bool(checks) and all(c.passed for c in checks),
        "checks": [c.as_dict() for c in checks],
        "suites": suites,
        "created": _now(),
        "candidate": candidate,
        # A relative gate is valid only against the champion it was computed with.
        "champion": champion,
        "results": results,
        "note": "" if checks else "no gates configured: nothing may be released without at least one gate",
        "warnings": [
            f"{key} is gated only relative to a reference: add an absolute bound (e.g. `{_example(gates, key)}`), "
            "or a model as bad as its base passes"
            for key in relative_only(gates)
        ],
    }


def _example(gates: list, key: str) -> str:
    """An absolute bound in the direction the relative gate points (a floor for a score, a
    ceiling for a rate): `task.exact_match <= 0.05` would suggest the opposite of a floor."""
    op = next(g.op for g in gates if g.key == key)
    return f"{key} >= 0.5" if op in (">=", ">") else f"{key} <= 0.05"


def _champion(targets: list[tuple[str, str, Path]]) -> dict | None:
    from lamina.registry.versions import version_of_dir

    for role, ref, path in targets:
        if role == "champion":
            return {"ref": ref, **(version_of_dir(path) or {"path": str(path)})}
    return None


def write(out_dir: Path, doc: dict) -> None:
    """Write the three files and sign them together: `lamina register` refuses a verdict
    edited after it was written (the signature names the changed file)."""
    from lamina.registry import signing

    signing.ensure_keys()
    with atomic_dir(out_dir, replace=True) as tmp:
        write_json(tmp / "report.json", doc)
        write_json(tmp / "gate.json", doc["gate"])
        write_text(tmp / "report.html", render_html(doc))
        if doc.get("prompt_reference"):
            write_json(tmp / inputs.REFERENCE, doc["prompt_reference"])
        signing.sign_dir(tmp)


def _tables(doc: dict) -> list[dict]:
    """Per suite: the candidate's metrics beside the baselines' and the deltas against them."""
    res, d = doc["results"], doc["deltas"]
    roles = [r for r in ("candidate", "base", "champion") if r in res]
    refs = [r for r in ("base", "champion") if d.get(r)]
    out = []
    for suite in doc["suites"]:
        rows = [
            {
                "metric": metric,
                "cells": [res[r].get(suite, {}).get(metric) for r in roles]
                + [(d[r].get(suite) or {}).get(metric) for r in refs],
            }
            for metric in res["candidate"].get(suite, {})
        ]
        head = roles + [f"Δ vs {r}" for r in refs]
        out.append({"suite": suite, "head": head, "rows": rows, "notes": doc["notes"].get(suite, [])})
    return out


def _delta_rows(doc: dict) -> list[tuple[str, dict[str, float]]]:
    """Deltas of metrics on a 0..1 scale (rates, accuracies, AUCs): comparable on one axis."""
    res, rows = doc["results"], []
    for suite in doc["suites"]:
        for metric, v in res["candidate"].get(suite, {}).items():
            entry = {}
            for ref in ("base", "champion"):
                w = (res.get(ref) or {}).get(suite, {}).get(metric)
                if f"{suite}.{metric}" in RATES and all(isinstance(x, int | float) for x in (v, w)):
                    entry[ref] = v - w
            if entry:
                rows.append((f"{suite}.{metric}", entry))
    return rows


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    text = resources.files("lamina.assets").joinpath("report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    return env.from_string(text)


def render_html(doc: dict) -> str:
    """The report page from its Jinja2 template (assets/report.html.j2), every text escaped."""
    history = doc["training"]["history"]
    curves = {
        key: [(h["step"], h[key]) for h in history if isinstance(h.get(key), int | float) and "step" in h]
        for key in ("loss", "eval_loss")
    }
    curve_svg = svg.line_chart({k: v for k, v in curves.items() if v}, "Training loss by step")
    bars = svg.delta_bars(
        _delta_rows(doc), "Candidate minus baseline (metrics on a 0-1 scale)", better=BETTER
    )
    verdict = "PASSED" if doc["gate"]["passed"] else "FAILED"
    return _template().render(
        doc=doc, verdict=verdict, css=CSS, tables=_tables(doc), bars=bars, curve=curve_svg
    )


def summary(doc: dict) -> dict:
    """What `lamina eval --json` prints: the verdict, every number, where the files are."""
    return {
        "passed": doc["gate"]["passed"],
        "checks": doc["gate"]["checks"],
        "warnings": doc["gate"].get("warnings", []),
        "results": doc["results"],
        "deltas": doc["deltas"],
        "report": str(Path(doc["out_dir"]) / "report.html"),
        "gate": str(Path(doc["out_dir"]) / "gate.json"),
        "seconds": doc["seconds"],
    }


def print_summary(doc: dict, console) -> None:
    """Each gate check on its own line with value, threshold and verdict, then the verdict."""
    from rich.table import Table

    table = Table(title="metrics", show_lines=False)
    roles = [r for r in ("candidate", "base", "champion") if r in doc["results"]]
    table.add_column("metric")
    for r in roles:
        table.add_column(r, justify="right")
    for suite in doc["suites"]:
        for metric in doc["results"]["candidate"].get(suite, {}):
            cells = [doc["results"][r].get(suite, {}).get(metric) for r in roles]
            table.add_row(f"{suite}.{metric}", *[_plain(c) for c in cells])
    console.print(table)
    gate = doc["gate"]
    for c in gate["checks"]:
        mark = "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]"
        note = f"  ({c['note']})" if c.get("note") else ""
        line = f"{mark}  {c['expr']}   value={_plain(c['value'])}  threshold={_plain(c['threshold'])}{note}"
        console.print(line, soft_wrap=True, highlight=False)
    if not gate["checks"]:
        console.print(f"[yellow]{gate['note']}[/]", soft_wrap=True)
    for warning in gate.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    verdict = "[bold green]PASSED[/]" if gate["passed"] else "[bold red]FAILED[/]"
    console.print(f"gate verdict: {verdict}")
    console.print(f"report: {Path(doc['out_dir']) / 'report.html'}", soft_wrap=True, highlight=False)


def _plain(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
