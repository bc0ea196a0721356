"""Identity commands: personal keys (`keys user-init`), enrolling and revoking (`policy enroll`,
`policy revoke`, `policy sign`), and the count of refused attempts (`audit refusals`)."""

from __future__ import annotations

import json

import typer

from lamina.cli.keys import keys_app
from lamina.cli.registry import audit_app, policy_app
from lamina.console import out


@keys_app.command("user-init")
def user_init(force: bool = typer.Option(False, "--force", help="Replace your key (then an admin enrolls the new one).")):
    """Make your personal Ed25519 key (kept in your config directory) and ask for enrollment."""
    from lamina import workspace
    from lamina.governance import identity

    user = workspace.user()
    info = identity.create_key(user, force=force)
    out.print(
        f"personal key for {user}: {info['private']} (back it up; never share it)\n"
        f"key id: {info['key_id']}\nrequest: {info['request']}\n"
        f"tell an admin your key id; they run `lamina policy enroll {user} --key-id {info['key_id']}`",
        highlight=False, soft_wrap=True,
    )


@policy_app.command("enroll")
def policy_enroll(
    user: str = typer.Argument(..., help="The person whose key request to enroll."),
    key_id: str = typer.Option(None, "--key-id", help="The key id they told you (checked against the request)."),
):
    """Enroll the personal key a person made with `lamina keys user-init` (policy re-signed by you)."""
    from lamina.governance import access

    key = access.enroll(user, expect=key_id)
    out.print(f"{user}: key {key} enrolled", highlight=False)


@policy_app.command("revoke")
def policy_revoke(
    user: str = typer.Argument(..., help="Identity."),
    role: str = typer.Argument(..., help="The role to take away."),
):
    """Take a role from a user (policy re-signed by you)."""
    from lamina.governance import access

    left = access.revoke(user, role)
    out.print(f"{user}: {', '.join(left) or 'no roles'}", highlight=False)


@policy_app.command("sign")
def policy_sign():
    """Re-sign policy.yaml after reviewing a hand edit (you must be an admin in it, with a trusted key)."""
    from lamina.governance import access

    signer = access.sign_policy()
    out.print(f"{access.policy_path()}: signed by {signer}", highlight=False, soft_wrap=True)


@audit_app.command("refusals")
def audit_refusals(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")):
    """Refused attempts (role, four-eyes, gate, identity, signature), counted by kind and user."""
    from lamina.governance import audit_check

    info = audit_check.refusals()
    if as_json:
        out.print_json(json.dumps(info))
        return
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(info["by_kind"].items())) or "none"
    users = ", ".join(f"{u} {n}" for u, n in sorted(info["by_user"].items())) or "none"
    lines = [f"refusals: {info['total']} (by kind: {kinds}; by user: {users})"]
    lines += [f"  seq {r['seq']}  {r['time']}  {r['user']}{'' if r['signed'] else ' (unproven)'}  "
              f"{r.get('kind', 'role')}: {r.get('message') or r.get('permission')}" for r in info["recent"]]
    out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
