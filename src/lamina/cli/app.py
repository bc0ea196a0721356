"""The typer application every command module registers on."""

from __future__ import annotations

import typer

from lamina.console import console, out  # noqa: F401  (re-exported for command modules)

app = typer.Typer(
    name="lamina",
    help="Governed post-training: intake, training, evaluation, registry, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
