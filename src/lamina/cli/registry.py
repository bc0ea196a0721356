"""Registry and governance commands: track, register, promote, rollback, history, lineage,
verify, audit verify, policy grant. Each calls one library function and prints its result."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lamina.cli.app import app
from lamina.console import console, out

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
policy_app = typer.Typer(help="Roles and who holds them (policy.yaml).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")


def _emit(obj, as_json: bool, text: str) -> None:
    if as_json:
        out.print_json(json.dumps(obj, default=str))
    else:
        out.print(text, highlight=False, markup=False, soft_wrap=True)


@app.command()
def track(
    run: Path = typer.Argument(..., help="A completed run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Log a completed run to MLflow (params, hashes, metrics, artifacts)."""
    from lamina.governance import access
    from lamina.registry import tracking

    access.require("train")
    rid = tracking.log_run(run)
    _emit(
        {"mlflow_run_id": rid, "tracking_uri": tracking.tracking_uri()},
        as_json,
        f"logged {run} as MLflow run {rid}",
    )


@app.command()
def register(
    run: Path = typer.Argument(..., help="A completed run directory whose eval gate passed."),
    name: str = typer.Option(..., "--name", "-n", help="Registered model name."),
    intended_use: str = typer.Option(None, "--intended-use", help="Model card: intended use."),
    out_of_scope: str = typer.Option(None, "--out-of-scope", help="Model card: out-of-scope use."),
    limitations: str = typer.Option(None, "--limitations", help="Model card: limitations."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Register a gated run as a new signed, carded version."""
    from lamina.registry import versions

    text = {"intended_use": intended_use, "out_of_scope": out_of_scope, "limitations": limitations}
    with console.status(f"registering {run} as {name}"):
        result = versions.register(run, name, **text)
    done = "already done: " if result.get("already_done") else ""
    _emit(result, as_json, f"{done}registered {result['name']}/{result['version']} at {result['path']}")


@app.command()
def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    version: int = typer.Argument(..., help="Registered version number to point the alias at."),
    to: str = typer.Option(..., "--to", help="Alias to move: staging or production."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the history and audit log)."),
    op_id: str = typer.Option(None, "--op-id", help="Idempotency key: a retry with it never moves twice."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Point an alias at a version (gate, signature and four-eyes checked)."""
    from lamina.registry import aliases

    move = aliases.promote(name, version, to, reason, op_id=op_id)
    done = "already done: " if move.get("already_done") else ""
    _emit(move, as_json, f"{done}{name}@{to}: {move['from'] or '-'} -> {move['to']}")


@app.command()
def rollback(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("production", "--alias", help="Alias to move back to its previous version."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the history and audit log)."),
    op_id: str = typer.Option(None, "--op-id", help="Idempotency key: a retry with it never rolls back twice."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Point an alias back at the version it held before."""
    from lamina.registry import aliases

    move = aliases.rollback(name, alias, reason, op_id=op_id)
    done = "already done: " if move.get("already_done") else ""
    _emit(move, as_json, f"{done}{name}@{alias}: {move['from']} -> {move['to']} (rolled back: {reason})")


@app.command()
def history(
    name: str = typer.Argument(..., help="Registered model name."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Every registration, alias move and rollout step of a model."""
    from lamina.rollout import report

    events = report.history(name)
    _emit(events, as_json, report.render_history(events))


@app.command()
def lineage(
    ref: str = typer.Argument(None, help="NAME@ALIAS or NAME/VERSION."),
    dataset: str = typer.Option(None, "--dataset", help="List what was built on this dataset version."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Trace a version back to its data, or a dataset version forward to every model."""
    from lamina.errors import LaminaError
    from lamina.registry import lineage as lin

    if (ref is None) == (dataset is None):
        raise LaminaError("give either a reference (NAME@ALIAS) or --dataset V")
    if dataset:
        info = lin.for_dataset(dataset)
        _emit(info, as_json, lin.render_dataset(info))
    else:
        info = lin.lineage(ref)
        _emit(info, as_json, lin.render(info))


@app.command()
def verify(target: str = typer.Argument(..., help="NAME@ALIAS, NAME/VERSION or a signed directory.")):
    """Check a version's OMS signature against the workspace key."""
    from lamina.registry import signing, versions

    base = None
    if Path(target).is_dir():
        path, signer = Path(target), signing.verify_dir(target)
    else:
        mv = versions.version_for(target)
        path, signer = versions.verify_version(mv)
        base = _check_base(path, f"{mv.name}/{mv.version}")
    out.print(f"{path}: signature valid (signer sha256:{signer})", highlight=False, soft_wrap=True)
    if base:
        out.print(base, highlight=False, soft_wrap=True)


def _check_base(path: Path, where: str) -> str | None:
    """An adapter's outputs depend on its base as much as on its own signed files: hold the
    base to the hashes recorded at training (refused when it changed). A base not on this
    machine is said, not refused: a signature can be checked where the model is not loaded."""
    from lamina.fsio import read_json
    from lamina.registry import versions
    from lamina.rundir import RUN_JSON
    from lamina.serve.servable import check_base

    if versions.artifact_kind(path) != "adapter":
        return None
    recorded = read_json(path / RUN_JSON).get("base") or {}
    base = Path(recorded.get("path") or "")
    if not recorded.get("path") or not base.is_dir():
        return f"base {base}: not on this machine (checked when the version is loaded)"
    check_base(base, recorded, f"{where} {RUN_JSON}: base")
    return f"base {base}: unchanged since training"


@audit_app.command("verify")
def audit_verify(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")):
    """Check the audit log's hash chain; exit 1 naming each broken line."""
    from lamina.governance import audit, audit_check
    from lamina.registry import anchor, audit_head, coverage

    verdict = audit.verify()
    verdict.problems += audit_check.check() + audit_head.check()
    verdict.problems += anchor.check()
    verdict.problems += coverage.check()
    _emit(
        {"ok": verdict.ok, "entries": verdict.entries, "problems": verdict.problems},
        as_json,
        f"audit log intact: {verdict.entries} entries"
        if verdict.ok
        else "audit log FAILED verification:\n  " + "\n  ".join(verdict.problems),
    )
    if not verdict.ok:
        raise typer.Exit(1)


@policy_app.command("grant")
def policy_grant(
    user: str = typer.Argument(..., help="Identity (LAMINA_USER, or the MLflow user)."),
    role: str = typer.Argument(..., help="A role of the policy: viewer, data-steward, trainer, ..."),
    key_id: str = typer.Option(None, "--key-id", help="The key id the user told you (checked against their request)."),
):
    """Give a user a role (needs the `policy` permission), enrolling the personal key they made
    with `lamina keys user-init` if one waits; the policy is re-signed by you."""
    from lamina.governance import access

    result = access.grant(user, role, expect=key_id)
    key = f" (key {result['key']} enrolled)" if result["key"] else ""
    out.print(f"{user}: {', '.join(result['roles'])}{key}", highlight=False)


@policy_app.command("encrypt-at-rest")
def policy_encrypt_at_rest(
    state: str = typer.Argument(..., help="on or off: store dataset versions and registered weights encrypted."),
):
    """Switch `security.encrypt_at_rest` (needs the `policy` permission); on also encrypts existing dataset versions."""
    from lamina.errors import LaminaError
    from lamina.governance import at_rest

    if state not in ("on", "off"):
        raise LaminaError("expected on or off", f"state {state!r}")
    before = at_rest.set_enabled(state == "on")
    out.print(f"security.encrypt_at_rest: {'on' if before else 'off'} -> {state}")
    if state == "on":  # versions made before are encrypted now (their names do not change)
        from lamina.data.intake.pipeline import seal_versions

        sealed = seal_versions()
        if sealed:
            out.print(f"{len(sealed)} dataset versions encrypted; registered versions stay as signed")
