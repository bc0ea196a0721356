"""Rollout, monitoring and incident commands: `lamina rollout`, `lamina monitor`, `lamina incident`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from lamina.cli.app import app
from lamina.console import out

rollout_app = typer.Typer(
    help="Canary and shadow rollouts by alias, guarded by live metrics.", no_args_is_help=True
)
incident_app = typer.Typer(
    help="Incidents: owners, disclosures, freezes, retrospectives, drills.", no_args_is_help=True
)
monitor_app = typer.Typer(
    help="Live per-version metrics, and the scheduled guard check.", invoke_without_command=True
)
app.add_typer(rollout_app, name="rollout")
app.add_typer(incident_app, name="incident")


def _emit(obj, as_json: bool, text: str) -> None:
    if as_json:
        out.print_json(json.dumps(obj, default=str))
    else:
        out.print(text, highlight=False, markup=False, soft_wrap=True)


@rollout_app.command("start")
def rollout_start(
    name: str = typer.Argument(..., help="Registered model name."),
    version: int = typer.Argument(..., help="Registered version to roll out."),
    alias: str = typer.Option("production", "--alias", help="Alias the rollout moves."),
    canary: float = typer.Option(None, "--canary", help="Percent of callers sent to the version (sticky)."),
    shadow: bool = typer.Option(
        False, "--shadow", help="The version answers a copy; users see the champion."
    ),
    guard: list[str] = typer.Option(
        None, "--guard", help="Replace the recipe's rollout.guards (repeatable)."
    ),
    window: float = typer.Option(None, "--window", help="Guard window in seconds."),
    min_requests: int = typer.Option(None, "--min-requests", help="Requests a step needs before its guards are judged."),
    webhook: str = typer.Option(None, "--webhook", help="URL POSTed a notice on an automatic rollback."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the history and audit log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Start a canary or shadow rollout of a version behind an alias (promotion rules checked)."""
    from lamina.rollout import control

    state = control.start(
        name,
        version,
        alias,
        canary,
        shadow,
        reason,
        guards=guard or None,
        window_s=window,
        min_requests=min_requests,
        webhook=webhook,
    )
    what = f"{state['share']:g}% canary" if state["mode"] == "canary" else "shadow"
    done = "already done: " if state.get("already_done") else ""
    _emit(
        state,
        as_json,
        f"{done}{name}@{alias}: v{version} {what} beside v{state['champion']} (rollout {state['id']})",
    )


@rollout_app.command("step")
def rollout_step(
    name: str = typer.Argument(..., help="Registered model name."),
    to: float = typer.Option(..., "--to", help="New canary share in percent."),
    alias: str = typer.Option("production", "--alias", help="Alias the rollout moves."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the history and audit log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Change the share of an active canary."""
    from lamina.rollout import control

    state = control.step(name, alias, to, reason)
    _emit(state, as_json, f"{name}@{alias}: v{state['challenger']} now {state['share']:g}%")


@rollout_app.command("complete")
def rollout_complete(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("production", "--alias", help="Alias the rollout moves."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the history and audit log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Move the alias to the challenger (a promotion) and end the rollout."""
    from lamina.rollout import control

    state = control.complete(name, alias, reason)
    _emit(state, as_json, f"{name}@{alias}: {state['champion']} -> {state['challenger']} (rollout completed)")


@rollout_app.command("abort")
def rollout_abort(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("production", "--alias", help="Alias the rollout moves."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the history and audit log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """End an active rollout: all traffic back to the champion."""
    from lamina.rollout import control

    state = control.abort(name, alias, reason)
    _emit(state, as_json, f"{name}@{alias}: rollout {state['id']} aborted; v{state['champion']} serves all")


@rollout_app.command("status")
def rollout_status(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option(None, "--alias", help="Only this alias's rollout."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Each alias's rollout with both versions' live metrics and the guards' verdict so far."""
    from lamina.rollout import control, report

    items = control.status(name, alias)
    _emit(items, as_json, report.render_status(items))


@app.command("monitor")
def monitor(
    first: str = typer.Argument(None, metavar="[NAME | check [NAME]]", help="A model name, or `check` then a name."),
    name: str = typer.Argument(None, hidden=True, help="The model name after `check`."),
    window: float = typer.Option(
        None, "--window", help="Seconds of traffic summarised (default: rollout window)."
    ),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one view and exit."),
    as_json: bool = typer.Option(False, "--json", help="One snapshot (or the check's findings) as JSON."),
):
    """Live per-version view: volume, errors, latency, guard trips, refusals, ratings, agreement.
    `lamina monitor check [NAME]` judges every served version's guards once (schedule it): it rolls
    back breaking rollouts, opens incidents for degraded champions, and exits 1 when anything broke."""
    if first == "check":
        return _monitor_check(name, as_json)
    if name is not None:
        raise typer.BadParameter(f"unexpected argument {name!r}")
    from rich.live import Live
    from rich.text import Text

    from lamina.rollout import monitor as mon

    if as_json or once:
        snap = mon.snapshot(first, window)
        _emit(snap, as_json, mon.render(snap))
        return
    with Live(Text(mon.render(mon.snapshot(first, window))), console=out, auto_refresh=False) as view:
        while True:  # until Ctrl-C
            time.sleep(interval)
            view.update(Text(mon.render(mon.snapshot(first, window))), refresh=True)


def _monitor_check(name: str | None, as_json: bool) -> None:
    from lamina.rollout import monitor as mon

    found = mon.check_all(name)
    broke = [f for f in found if f["verdict"]["state"] == "breach"]
    text = (
        "\n".join(
            f"{f['model']}@{f['alias']} ({f['kind']}): {f['verdict']['state']}"
            + (f" — {', '.join(f['verdict']['breached'])}" if f["verdict"]["breached"] else "")
            + (f"; {json.dumps(f['action'])}" if f["action"] else "")
            for f in found
        )
        or "nothing served"
    )
    _emit(found, as_json, text)
    if broke:
        raise typer.Exit(1)


@incident_app.command("open")
def incident_open(
    name: str = typer.Argument(..., help="Registered model name."),
    severity: str = typer.Option(..., "--severity", help="low, medium, high or critical."),
    summary: str = typer.Option(..., "--summary", help="What happened, in one line."),
    version: list[int] = typer.Option(
        None, "--version", help="Affected version (repeatable; default: production)."
    ),
    signal: list[str] = typer.Option(
        None, "--signal", help="SIGNAL=VALUE matched against disclosure triggers."
    ),
    rollback: bool = typer.Option(False, "--rollback", help="Also roll production back one version."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Open an incident: owner and disclosures from the policy; promotions of the model frozen."""
    from lamina.errors import LaminaError
    from lamina.registry import aliases, incident_links
    from lamina.rollout import report

    signals = {}
    for s in signal or []:
        key, sep, value = s.partition("=")
        try:
            signals[key] = float(value) if sep else 1.0
        except ValueError:
            raise LaminaError("a signal is SIGNAL=NUMBER", f"--signal {s!r}") from None
    versions = list(version or [])
    if not versions and aliases.current(name, "production") is not None:
        versions = [aliases.current(name, "production")]
    record = incident_links.open_and_link(name, severity, summary, versions=versions, signals=signals)
    if rollback:
        move = aliases.rollback(name, "production", reason=f"incident {record['id']}: {summary}")
        record["rollback"] = move
    done = "already done: " if record.get("already_done") else ""
    _emit(record, as_json, done + report.render_incident(record))


@incident_app.command("show")
def incident_show(number: int = typer.Argument(..., help="Incident number."), as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")):
    """One incident in full."""
    from lamina.governance import incidents
    from lamina.rollout import report

    record = incidents.get(number)
    record["overdue"] = incidents.overdue(record)
    _emit(record, as_json, report.render_incident(record))


@incident_app.command("list")
def incident_list(
    name: str = typer.Argument(None, help="Only this model's incidents."),
    state: str = typer.Option(None, "--state", help="open or closed"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Incidents, newest last; overdue disclosures are marked."""
    from lamina.governance import incidents
    from lamina.rollout import report

    records = incidents.all_incidents(name, state)
    _emit(records, as_json, report.render_incidents(records))


@incident_app.command("notified")
def incident_notified(
    number: int = typer.Argument(..., help="Incident number."),
    contact: str = typer.Argument(..., help="Who was notified."),
    signal: str = typer.Option(None, "--signal", help="The disclosure trigger this notice answers."),
):
    """Record that a contact named by a disclosure trigger was told."""
    from lamina.governance import incidents

    incidents.notified(number, contact, signal)
    out.print(f"incident {number}: {contact} recorded as told", highlight=False)


@incident_app.command("close")
def incident_close(
    number: int = typer.Argument(..., help="Incident number."),
    retrospective: Path = typer.Option(..., "--retrospective", help="The retrospective (required)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Close an incident with its retrospective (refused without one); promotions unfreeze."""
    from lamina.governance import incidents
    from lamina.rollout import report

    record = incidents.close(number, retrospective)
    _emit(record, as_json, ("already done: " if record.get("already_done") else "") + report.render_incident(record))


@incident_app.command("drill")
def incident_drill(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("staging", "--alias", help="Alias the drill uses."),
    server: str = typer.Option(
        None, "--server", help="Base URL of a running lamina serve, e.g. http://127.0.0.1:8000/v1."
    ),
    api_key_env: str = typer.Option("LAMINA_API_KEY", "--api-key-env", help="Environment variable holding the API key."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Rehearse: roll a non-production alias back and forward, time both legs, record it."""
    import os

    from lamina.rollout import drill

    result = drill.drill(name, alias, server, os.environ.get(api_key_env))
    served = (
        f"; server answered from v{result['rolled_back_to']} after {result['back_served_s']} s"
        if result["back_served_s"] is not None
        else ""
    )
    back_on = (
        f", server answered from v{result['from']} after {result['forward_served_s']} s"
        if result["forward_served_s"] is not None
        else ""
    )
    _emit(
        result,
        as_json,
        f"drill {result['drill']}: {name}@{alias} v{result['from']} -> v{result['rolled_back_to']} "
        f"in {result['back_move_s']} s{served}; forward in {result['forward_move_s']} s{back_on}; "
        f"restored: {result['restored']}",
    )
