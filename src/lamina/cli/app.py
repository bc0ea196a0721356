"""The typer application every command module registers on."""

from __future__ import annotations

import typer

from lamina.console import console, out  # noqa: F401  (re-exported for command modules)

app = typer.Typer(
    name="lamina",
    # Only what exists: keep this true to the commands registered below at every commit.
    help="Governed post-training: data intake, training, evaluation, registry, release and serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from lamina import __version__

        out.print(f"lamina {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print Lamina's version and exit."
    ),
) -> None:
    """Governed post-training: data intake, training, evaluation, registry, release and serving."""
