"""`lamina eval MODEL_OR_RUN`: suites, baselines, gates, report."""

from __future__ import annotations

import json

import typer

from lamina.cli.app import app, out
from lamina.errors import LaminaError


@app.command("eval")
def eval_command(
    target: str = typer.Argument(
        ..., help="A Lamina run directory, a Hugging Face model directory, or `tiny`."
    ),
    suite: str | None = typer.Option(
        None, "--suite", help="Comma-separated: task,safety,privacy,efficiency,judge (default: the recipe's)."
    ),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe whose `eval:` section to use."),
    out_dir: str | None = typer.Option(None, "--out", help="Report directory (default: RUN/eval)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict and numbers as JSON."),
    gates_only: bool = typer.Option(
        False, "--gates-only", help="Re-check the gates from the stored report against the current champion "
        "(no suite is run); TARGET may also be a registered NAME/VERSION.",
    ),
) -> None:
    """Evaluate a model against its base (and the production champion); exit 1 when a gate fails."""
    from lamina.eval import report, verdict

    suites = [s.strip() for s in suite.split(",") if s.strip()] if suite else None
    if gates_only and (suites or recipe):
        raise LaminaError("--gates-only re-checks the stored report: it takes no --suite or --recipe", "--gates-only")
    if gates_only:
        doc = verdict.recheck(target, out_dir)
    else:
        doc = verdict.evaluate(target, suites, recipe, out_dir, progress=not as_json)
    if as_json:
        out.print(json.dumps(report.summary(doc), indent=2), highlight=False, soft_wrap=True)
    else:
        report.print_summary(doc, out)
    raise typer.Exit(0 if doc["gate"]["passed"] else 1)
