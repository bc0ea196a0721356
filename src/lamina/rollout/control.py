"""Rollout commands and the guard watch: start, step, complete, abort, and `check`, which judges
an active rollout's window and rolls it back by itself on a breach.

During a rollout the alias still names the champion; the rollout record names the challenger
and its share, and servers split traffic by it. Completing moves the alias (with every
promotion rule: gate, signature, four eyes, role, no open incident); rolling back ends the
record, so every replica routes the whole alias to the champion again on its next poll.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime

import yaml
from pydantic import ValidationError

from lamina import rundir
from lamina.errors import LaminaError
from lamina.governance import access, audit, journal
from lamina.recipe import RolloutSpec
from lamina.registry import aliases, incident_links, ops
from lamina.registry.anchor import anchor
from lamina.registry.versions import get_version, local_dir, model_lock, now
from lamina.rollout import guards, live, record

log = logging.getLogger("lamina.rollout")


def rollout_spec(name: str, version: int, **overrides) -> RolloutSpec:
    """The challenger's own recipe `rollout:` section, with the operator's overrides on top."""
    path = local_dir(get_version(name, version)) / rundir.RECIPE
    raw = {}
    if path.is_file():
        raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("rollout") or {}
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        spec = RolloutSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise LaminaError(first["msg"], f"{path}: rollout.{'.'.join(map(str, first['loc']))}") from None
    guards.parse_guards(spec.guards, f"{path}: rollout.guards")
    guards.parse_guards(spec.monitor_guards, f"{path}: rollout.monitor_guards")
    return spec


def _entry(name: str, state: dict, reason: str | None, **details) -> dict:
    """A rollout change's audit details."""
    return dict(name=name, alias=state["alias"], rollout=state["id"], champion=state["champion"],
                challenger=state["challenger"], mode=state["mode"], share=state["share"], reason=reason or "",
                **details)


def _event_of(intent: journal.Intent) -> dict | None:
    """Whether a rollout change a kill interrupted took effect: its event names the operation."""
    name = intent.details["name"]
    for event in record.events(name):
        extra = dict(event.get("details") or {})
        if extra.pop("op_id", None) == intent.op_id:
            state = {**event, "id": event["rollout"]}
            return _entry(name, state, event["reason"], **extra)
    return None


PROBES: dict[str, journal.Probe] = dict.fromkeys(
    ("rollout.start", "rollout.step", "rollout.complete", "rollout.abort", "rollout.rollback"), _event_of)


def _write(name: str, new_state: dict, op: str, user: str, reason: str | None, **details) -> dict:
    """Apply a rollout change and its audit entry as one operation (lamina.governance.journal),
    settling first what a killed rollout command on `name` left; the caller holds the model lock."""
    aliases.settle(name, PROBES)  # also a drill a kill interrupted
    with journal.operation(ops.domain(name), op, user, _event_of, name=name, alias=new_state["alias"]) as intent:
        state = record.write(name, new_state, op, user, reason, op_id=intent.op_id, **details)
        intent.result.update(_entry(name, state, reason, **details))
    anchor(name, intent.result["entry"])
    return state


def start(
    name: str,
    version: int,
    alias: str = "production",
    canary: float | None = None,
    shadow: bool = False,
    reason: str | None = None,
    **overrides,
) -> dict:
    """Send `canary` % of `alias`'s callers (or a shadow copy of all traffic) to `version`."""
    if (canary is None) == (not shadow):
        raise LaminaError("give either --canary PERCENT or --shadow", f"{name}@{alias}")
    if canary is not None and not 0 < canary < 100:
        raise LaminaError(
            "a canary share is a percentage between 0 and 100 (exclusive)", f"--canary {canary}"
        )
    user = aliases.promote(name, version, alias, check_only=True)["user"]
    spec = rollout_spec(name, version, **overrides)
    with model_lock(name):
        settled = aliases.settle(name, PROBES)  # first, so a retried start can know itself
        running = record.active(name, alias)
        if running and _retried_start(running, user, version, canary, shadow, reason, settled):
            return {**running, "already_done": True}
        champion = aliases.current(name, alias)
        if champion is None:
            raise LaminaError(
                f"nothing is at {alias} yet; promote the first version instead", f"{name}@{alias}"
            )
        if champion == int(version):
            raise LaminaError(f"{alias} already points at version {version}", f"{name}@{alias}")
        running = record.active(name, alias)
        if running:
            raise LaminaError(
                f"a rollout of version {running['challenger']} is active; step, complete or abort it first",
                f"{name}@{alias}",
            )
        state = {
            "id": uuid.uuid4().hex[:12],
            "alias": alias,
            "champion": champion,
            "challenger": int(version),
            "mode": "shadow" if shadow else "canary",
            "share": 0.0 if shadow else float(canary),
            "state": record.ACTIVE,
            "started": now(),
            "started_by": user,
            **spec.model_dump(),
        }
        return _write(name, state, "rollout.start", user, reason, guards=state["guards"])


def _retried_start(running: dict, user: str, version: int, canary: float | None, shadow: bool,
                   reason: str | None, settled: list[dict]) -> bool:
    """Whether this start repeats the one that started `running` and was interrupted: the same
    person, version, mode, share and reason, and its entry written by settling, not by it."""
    share = 0.0 if shadow else float(canary)
    if (running.get("started_by"), running["challenger"], running["mode"], running["share"]) != (
            user, int(version), "shadow" if shadow else "canary", share):
        return False
    just = {s["op"] for s in settled if s["action"] == "rollout.start" and s["applied"]}
    return any((e["details"].get("settled") or e["details"].get("op") in just)
               and e["details"].get("reason", "") == (reason or "") for e in audit.entries()
               if e["action"] == "rollout.start" and e["details"].get("rollout") == running["id"])


def _active_or_refuse(name: str, alias: str) -> dict:
    state = record.active(name, alias)
    if state is None:
        raise LaminaError("no rollout is active", f"{name}@{alias}")
    return state


def step(name: str, alias: str, to: float, reason: str | None = None) -> dict:
    """Change an active canary's share (the promotion rules are asked again)."""
    state = _active_or_refuse(name, alias)
    if state["mode"] != "canary":
        raise LaminaError("a shadow rollout has no share to step; complete or abort it", f"{name}@{alias}")
    if not 0 < to < 100:
        raise LaminaError("a canary share is a percentage between 0 and 100 (exclusive)", f"--to {to}")
    user = aliases.promote(name, state["challenger"], alias, check_only=True)["user"]
    with model_lock(name):
        state = _active_or_refuse(name, alias)
        before = state["share"]
        return _write(name, {**state, "share": float(to)}, "rollout.step", user, reason, share_before=before)


def complete(name: str, alias: str, reason: str | None = None) -> dict:
    """Move the alias to the challenger (a promotion, all rules checked) and end the rollout."""
    state = _active_or_refuse(name, alias)
    user = aliases.promote(name, state["challenger"], alias, check_only=True)["user"]
    if aliases.current(name, alias) != state["challenger"]:  # already there: a crash after the move
        aliases.promote(name, state["challenger"], alias, reason or f"rollout {state['id']} completed",
                        rollout=state["id"])
    with model_lock(name):
        state = _active_or_refuse(name, alias)
        return _write(name, {**state, "state": "completed", "share": 100.0}, "rollout.complete", user, reason)


def abort(name: str, alias: str, reason: str, *, auto: bool = False, details: dict | None = None) -> dict:
    """End an active rollout: all traffic back to the champion. `auto`: a guard did it."""
    if not (reason or "").strip():
        raise LaminaError("an abort needs a reason (--reason)", f"{name}@{alias}")
    if auto:
        user = access.acting_user()
        policy = access.ensure_policy()
        if not (access.allowed(user, "rollback", policy) or access.allowed(user, "serve", policy)):
            user = access.require("rollback", user)  # refuses, audited
    else:
        user = access.require("rollback")
    op, ended = ("rollout.rollback", "rolled_back") if auto else ("rollout.abort", "aborted")
    with model_lock(name):
        state = _active_or_refuse(name, alias)
        return _write(name, {**state, "state": ended, "share": 0.0}, op, user, reason, **(details or {}))


def judge(name: str, state: dict, at: float | None = None) -> tuple[guards.Verdict, dict, dict]:
    """The verdict on `state`'s challenger over its window, with both versions' statistics.
    The window never reaches back before the rollout started: what an earlier rollout of the
    same version saw (and was perhaps rolled back for) is not this one's evidence."""
    started = datetime.fromisoformat(state["started"]).timestamp()
    rows = live.window(name, state["window_s"], at, not_before=started)
    challenger = rows.get(f"{name}/{state['challenger']}") or {}
    champion = rows.get(f"{name}/{state['champion']}") or {}
    verdict = guards.judge(guards.parse_guards(state["guards"]), challenger, champion, state["min_requests"])
    return verdict, challenger, champion


def check(name: str, alias: str, at: float | None = None) -> dict | None:
    """Judge the active rollout of `name@alias`; on a breach roll it back, open an incident and
    tell the operator. Returns {state, verdict, challenger, champion, action} or None."""
    state = record.active(name, alias)
    if state is None:
        return None
    verdict, chall, champ = judge(name, state, at)
    out = {
        "rollout": state,
        "verdict": verdict.as_dict(),
        "challenger": chall,
        "champion": champ,
        "action": None,
    }
    if verdict.state == "breach":
        out["action"] = rollback_on_breach(name, alias, state, verdict, chall)
    return out


def _signals(verdict: guards.Verdict, chall: dict) -> dict[str, float]:
    signals = {"guard_breach": float(len(verdict.breached))}
    keys = {c.expr.split()[0] for c in verdict.breached}
    if keys & {"live.pii_trips", "live.pii_rate"}:
        signals["pii_in_outputs"] = float(chall.get("pii_trips") or 0)
    if keys & {"live.refusal_rate", "live.guard_trip_rate", "live.guard_trips"}:
        signals["safety_regression"] = float(len(keys))
    return signals


def rollback_on_breach(
    name: str, alias: str, state: dict, verdict: guards.Verdict, chall: dict
) -> dict | None:
    numbers = [{"guard": c.expr, "value": c.value, "threshold": c.threshold} for c in verdict.breached]
    details = {"breached": numbers, "window_s": state["window_s"], "requests": verdict.requests}
    first = numbers[0]
    reason = f"guard {first['guard']} broken: {first['value']:.4g} vs {first['threshold']:.4g}"
    try:
        ended = abort(name, alias, reason, auto=True, details=details)
    except LaminaError as e:
        if record.active(name, alias) is None or record.active(name, alias)["id"] != state["id"]:
            return None  # another replica (or an operator) ended it first
        raise e
    log.warning("rollout %s of %s/%s rolled back: %s", state["id"], name, state["challenger"], reason)
    incident = incident_links.open_and_link(
        name,
        "high",
        f"rollout of version {state['challenger']} rolled back: {reason}",
        versions=[state["challenger"]],
        signals=_signals(verdict, chall),
        source="guard_breach",
        user=access.acting_user(),
        details={"rollout": state["id"], **details},
    )
    notice = {
        "event": "rollout.rolled_back",
        "name": name,
        "alias": alias,
        "rollout": state["id"],
        "challenger": state["challenger"],
        "champion": state["champion"],
        "breached": numbers,
        "incident": incident["id"],
        "time": ended["updated"],
    }
    return {
        "rolled_back": True,
        "reason": reason,
        "incident": incident["id"],
        "webhook": notify(state.get("webhook"), notice),
    }


def notify(url: str | None, notice: dict) -> dict | None:
    """POST the notice to the configured webhook; a failure is reported, never raised."""
    if not url:
        return None
    import httpx

    started = time.perf_counter()
    try:
        status = httpx.post(url, json=notice, timeout=5.0).status_code
    except httpx.HTTPError as e:
        log.warning("webhook %s failed: %s", url, e)
        return {"url": url, "error": f"{type(e).__name__}: {e}"}
    return {"url": url, "status": status, "seconds": round(time.perf_counter() - started, 3)}


def status(name: str, alias: str | None = None, at: float | None = None) -> list[dict]:
    """Each alias's rollout (latest, active or ended) with the live window and verdict so far."""
    out = []
    for state in record.all_states(name):
        if alias is not None and state["alias"] != alias:
            continue
        verdict, chall, champ = judge(name, state, at)
        out.append(
            {
                "rollout": state,
                "verdict": verdict.as_dict(),
                "challenger": chall,
                "champion": champ,
                "alias_at": aliases.current(name, state["alias"]),
            }
        )
    return out
