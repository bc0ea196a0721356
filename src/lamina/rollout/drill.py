"""`lamina incident drill`: rehearse the way back on a non-production alias — roll back, then
forward again — and time each leg, from the alias move to a running server answering from
the version moved to (when a server URL is given), so the team knows its time to roll back.
"""

from __future__ import annotations

import time

from lamina import faults
from lamina.errors import LaminaError
from lamina.governance import access, incidents, journal
from lamina.registry import aliases, ops
from lamina.registry.versions import model_lock


def _ask(url: str, ref: str, api_key: str | None) -> tuple[str | None, str]:
    """(version that answered `ref`, what the server said when none did)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": ref, "prompt": "ping", "max_tokens": 1, "temperature": 0}
    try:
        r = httpx.post(f"{url.rstrip('/')}/completions", json=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as e:
        return None, f"no answer ({type(e).__name__})"
    if r.status_code == 200:
        return r.headers.get("x-lamina-version"), ""
    try:
        said = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        said = r.text[:200]
    return None, f"HTTP {r.status_code}: {said}"


def _check_server(url: str | None, ref: str, key: str, api_key: str | None) -> None:
    """Before anything moves: the server must be answering `ref` from `key` now, or the drill
    would time a wait for something that never comes (and leave the alias rolled back)."""
    if not url:
        return
    got, said = _ask(url, ref, api_key)
    if got != key:
        raise LaminaError(
            f"the server does not answer {ref} from {key} now ({said or f'it answers from {got}'}); "
            f"drill against a server that serves {ref} (e.g. `lamina serve {ref}`)",
            url,
        )


def _wait_served(url: str | None, ref: str, key: str, api_key: str | None, timeout_s: float) -> float | None:
    """Seconds until the server answers `ref` from version `key`; None without a server."""
    if not url:
        return None
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if _ask(url, ref, api_key)[0] == key:
            return round(time.perf_counter() - started, 3)
        time.sleep(0.05)
    raise LaminaError(f"the server did not answer from {key} within {timeout_s:g} s", url)


def drill(
    name: str,
    alias: str = "staging",
    server: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> dict:
    """Roll `name@alias` back one version and forward again; returns and records the timings.
    A kill part-way is finished by the next command on the model: one entry per move, and
    one `incident.drill` entry."""
    if alias in access.ensure_policy().four_eyes or alias == "production":
        raise LaminaError("drills run on a non-production alias (e.g. --alias staging)", f"{name}@{alias}")
    incidents.check_not_frozen(name)  # the forward leg is a promotion: refuse before moving anything
    user = access.require("rollback")
    if aliases.current(name, alias) is None:  # before any lock: a refusal leaves nothing behind
        raise LaminaError("nothing is at this alias; nothing to drill", f"{name}@{alias}")
    with ops.drill_running(name, alias):
        with model_lock(name):
            aliases.settle(name)  # a drill a kill interrupted is finished (or left) first
            start_at = aliases.current(name, alias)
        if start_at is None:
            raise LaminaError("nothing is at this alias; nothing to drill", f"{name}@{alias}")
        ref = f"{name}@{alias}"
        _check_server(server, ref, f"{name}/{start_at}", api_key)
        # One operation over both legs: a kill between them leaves the intent, and the next
        # command on the model rolls forward (lamina.registry.ops), so the alias ends where it began.
        intent = journal.begin(ops.domain(name), "incident.drill", user, name=name, alias=alias, **{"from": start_at})
        back_key, forward_key = ops.drill_keys(intent.op_id)
        try:
            timings = _legs(name, alias, start_at, server, api_key, timeout_s, back_key, forward_key)
        except LaminaError:
            if aliases.current(name, alias) == start_at:
                intent.path.unlink(missing_ok=True)  # refused, or rolled forward after a failed leg
            raise
        drilled = incidents.record_drill(name, alias, timings, user, op=intent.op_id)
        faults.point("incident.drill.audited")
        intent.path.unlink(missing_ok=True)
        return drilled


def _legs(name: str, alias: str, start_at: int, server: str | None, api_key: str | None, timeout_s: float,
          back_key: str, forward_key: str) -> dict:
    """Roll back, wait for the server, roll forward, wait again: the timings."""
    ref = f"{name}@{alias}"
    t0 = time.perf_counter()
    back = aliases.rollback(name, alias, reason="incident drill: roll back", op_id=back_key)
    back_move_s = round(time.perf_counter() - t0, 3)
    faults.point("incident.drill.back")
    try:
        back_served_s = _wait_served(server, ref, f"{name}/{back['to']}", api_key, timeout_s)
    except LaminaError:
        aliases.promote(name, start_at, alias, reason="incident drill: roll forward after a failed leg",
                        op_id=forward_key)
        raise
    t1 = time.perf_counter()
    aliases.promote(name, start_at, alias, reason="incident drill: roll forward", op_id=forward_key)
    forward_move_s = round(time.perf_counter() - t1, 3)
    faults.point("incident.drill.forward")
    forward_served_s = _wait_served(server, ref, f"{name}/{start_at}", api_key, timeout_s)
    return {
        "from": start_at,
        "rolled_back_to": back["to"],
        "back_move_s": back_move_s,
        "back_served_s": back_served_s,
        "forward_move_s": forward_move_s,
        "forward_served_s": forward_served_s,
        "server": server,
        "restored": aliases.current(name, alias) == start_at,
    }
