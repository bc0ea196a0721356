"""`lamina keys ...`: signing key pairs and data-encryption key management."""

from __future__ import annotations

import typer

from lamina.cli.app import app

keys_app = typer.Typer(help="Signing keys and encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(force: bool = typer.Option(False, "--force", help="Replace an existing signing key.")):
    """Make the workspace's ECDSA P-256 signing key pair (OMS signatures)."""
    from lamina.console import out
    from lamina.governance import access, audit
    from lamina.registry import signing

    user = access.require("keys")
    info = signing.init_keys(force=force)
    audit.record("keys.init", user=user, fingerprint=info["fingerprint"], replaced=force)
    out.print(
        f"signing key: {info['private']}\npublic key:  {info['public']}\nfingerprint: sha256:{info['fingerprint']}",
        soft_wrap=True,
        highlight=False,
    )


@app.command("init")
def init():
    """Set up a workspace: policy (you as admin), signing key pair, data-encryption master key."""
    from lamina import workspace
    from lamina.console import out
    from lamina.governance import access, audit, crypto
    from lamina.registry import signing

    created = []
    if not access.policy_path().exists():
        created.append(f"policy {access.init_policy()} (admin: {workspace.user()})")
    user = access.require("keys")
    if not signing.key_paths()[0].exists():
        info = signing.init_keys()
        audit.record("keys.init", user=user, fingerprint=info["fingerprint"], replaced=False)
        created.append(f"signing key sha256:{info['fingerprint']}")
    crypto.load_master_key(create=True)
    out.print(
        f"workspace {workspace.home()}: " + ("; ".join(created) or "already initialised"), soft_wrap=True
    )


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: str = typer.Option(
        None,
        "--new-key-file",
        help="Where the new master key goes (required when it comes from LAMINA_MASTER_KEY).",
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
    result = {
        "old_key_id": rot.old_key_id,
        "new_key_id": rot.new_key_id,
        "rewrapped": rot.rewrapped,
        "key": rot.key_written_to,
    }
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"master key {rot.old_key_id} -> {rot.new_key_id}; {len(rot.rewrapped)} files re-wrapped; new key in {rot.key_written_to}"
        )
