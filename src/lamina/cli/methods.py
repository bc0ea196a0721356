"""`lamina methods`: the adaptation methods side by side, measured on the recipe's base."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lamina.cli.app import app, console, out


@app.command("methods")
def methods_table(
    recipe: Path = typer.Argument(None, help="Recipe YAML whose base model (and method settings) to use."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurements as JSON."),
) -> None:
    """Trainable parameters, artifact size, mergeability, inference overhead and how `lamina serve` serves each method."""
    from lamina.methods.table import measure
    from lamina.recipe import load_recipe
    from lamina.train.tiny_base import resolve_base

    loaded = load_recipe(recipe) if recipe is not None else None
    base_dir = resolve_base(loaded.model.base, loaded.model.revision) if loaded else resolve_base("tiny")
    with console.status("measuring") as status:
        result = measure(base_dir, loaded, on_method=lambda name: status.update(f"measuring {name}"))
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title=f"adaptation methods on {result['base']}")
    for column in (
        "method",
        "trainable params",
        "trainable %",
        "artifact bytes",
        "mergeable",
        "inference overhead",
        "serving",
    ):
        table.add_column(column, justify="right" if column[0] in "ta" else "left")
    for row in result["methods"]:
        if "error" in row:
            table.add_row(row["method"], "-", "-", "-", "-", f"unavailable: {row['error']}", "-")
            continue
        table.add_row(
            row["method"],
            f"{row['trainable_params']:,}",
            f"{row['trainable_pct']:.4f}",
            f"{row['artifact_bytes']:,}",
            "yes" if row["mergeable"] else "no",
            row["inference_overhead"],
            row["serving"],
        )
    out.print(table)
