"""`lamina keys ...`: signing key pairs, data-encryption key management, and API keys for `lamina serve`."""

from __future__ import annotations

import typer

from lamina.cli.app import app

keys_app = typer.Typer(help="Signing keys, encryption keys and API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(force: bool = typer.Option(False, "--force", help="Replace an existing signing key.")):
    """Make the workspace's ECDSA P-256 signing key pair (OMS signatures)."""
    from lamina.console import out
    from lamina.governance import access
    from lamina.registry import keyops

    user = access.require("keys")
    info = keyops.init_signing_keys(user, force=force)
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
    from lamina.governance import access, crypto
    from lamina.registry import keyops, signing

    created = []
    if not access.policy_path().exists():
        created.append(f"policy {access.init_policy()} (admin: {workspace.user()})")
    user = access.require("keys")
    if not signing.key_paths()[0].exists():
        info = keyops.init_signing_keys(user)
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
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Make a new data-encryption master key and re-wrap every encrypted file's data key."""
    import json

    from lamina.cli.app import out
    from lamina.governance import access
    from lamina.registry import keyops

    user = access.require("keys")
    rot = keyops.rotate_master_key(user, new_key_file)
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


@keys_app.command("issue")
def keys_issue(
    user: str = typer.Option(..., "--user", help="The identity the key acts as (granted --role)."),
    role: str = typer.Option("consumer", "--role", help="A role of the policy the key is granted (default consumer)."),
    models: list[str] = typer.Option(None, "--model", help="A model it may call (NAME or NAME@ALIAS); repeat. Default: all."),
    rate: str = typer.Option(None, "--rate", help="Requests per period, e.g. 20/s."),
    tokens: str = typer.Option(None, "--tokens", help="Token budget per period, e.g. 200000/h."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Issue an API key for `lamina serve` (shown once; only its hash is kept)."""
    import json
    import sys

    from lamina.cli.app import out
    from lamina.console import console
    from lamina.serve import keys

    def show(result: dict) -> None:  # before the key is confirmed: a kill must not lose a printed secret
        if as_json:
            out.print_json(json.dumps({k: v for k, v in result.items() if k != "notes"}))
        else:
            out.print(f"key {result['id']} for {user} ({role}; models {', '.join(result['models'])}):\n"
                      f"{result['key']}", highlight=False, soft_wrap=True)
        sys.stdout.flush()

    result = keys.issue(user, role, models or None, rate, tokens, show=show)
    _notes(console, result["notes"])
    if result.get("already_done"):
        msg = (f"already done: key {result['id']} for {user} was issued and shown by the interrupted command; "
               "not issuing another (revoke it and issue again if its secret was lost)")
        if as_json:
            out.print_json(json.dumps({k: v for k, v in result.items() if k != "notes"}))
        else:
            out.print(msg, highlight=False, soft_wrap=True)


def _notes(console, notes: list[str]) -> None:
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (see `lamina keys list`).")):
    """Revoke an API key; a running server refuses it on the next request."""
    from lamina.cli.app import out
    from lamina.console import console
    from lamina.serve import keys

    record = keys.revoke(key_id)
    _notes(console, record["notes"])
    done = "already done: " if record.get("already_done") else ""
    out.print(f"{done}revoked key {record['id']} of {record['user']}", highlight=False)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")):
    """API keys: id, identity, role, models, limits, revoked (never the key)."""
    import json

    from lamina.cli.app import out
    from lamina.console import console
    from lamina.serve import keys

    notes: list[str] = []
    rows = keys.listing(notes)
    _notes(console, notes)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for r in rows:
        state = f"revoked {r['revoked']}" if r["revoked"] else "active"
        out.print(f"{r['id']}  {r['user']:<16} {r['role']:<10} models={','.join(r['models'])} "
                  f"rate={r['rate'] or '-'} tokens={r['tokens'] or '-'}  {state}", highlight=False)
