"""`lamina stages run`: the ordered post-training layers of a recipe, and `lamina ppo`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lamina.cli.app import app, console, out

stages_app = typer.Typer(
    help="Layered post-training (sft → dpo/reward → ppo → safety).", no_args_is_help=True
)
app.add_typer(stages_app, name="stages")


@stages_app.command("run")
def stages_run(
    recipe: Path = typer.Argument(..., help="Recipe YAML with a `stages:` list."),
    as_json: bool = typer.Option(False, "--json", help="Print the stage runs as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run every stage in order; each is its own run, linked to its parent."""
    from lamina.governance import access
    from lamina.recipe import load_recipe
    from lamina.train.stages import run_stages, summarise

    access.require("train")
    runs = run_stages(load_recipe(recipe), progress=not quiet)
    summary = summarise(runs)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        for s in summary:
            console.print(
                f"{s['stage']['index'] + 1}. {s['objective']}: [bold]{s['run_dir']}[/] (parent {s['parent_run']})"
            )
