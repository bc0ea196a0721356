"""`lamina keys ...`: signing key pairs and data-encryption key management."""

from __future__ import annotations

import typer

from lamina.cli.app import app

keys_app = typer.Typer(help="Signing keys and encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
