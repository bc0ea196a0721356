"""`lamina keys ...`: signing key pairs and data-encryption key management."""

from __future__ import annotations

import typer

from lamina.cli.app import app

keys_app = typer.Typer(help="Signing keys and encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: str = typer.Option(
        None, "--new-key-file", help="Where the new master key goes (required when it comes from LAMINA_MASTER_KEY)."
    ),
    as_json: bool = typer.Option(False, "--json"),
):
    """Make a new data-encryption master key and re-wrap every encrypted file's data key."""
    import json

    from lamina.cli.app import out
    from lamina.governance import access, audit, crypto

    user = access.require("keys")
    rot = crypto.rotate_master_key(new_key_file)
    audit.record("keys.rotate", user=user, old=rot.old_key_id, new=rot.new_key_id, files=len(rot.rewrapped))
    result = {"old_key_id": rot.old_key_id, "new_key_id": rot.new_key_id, "rewrapped": rot.rewrapped, "key": rot.key_written_to}
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(f"master key {rot.old_key_id} -> {rot.new_key_id}; {len(rot.rewrapped)} files re-wrapped; new key in {rot.key_written_to}")
