"""Alias moves: promote, rollback, history.

An alias (staging, production) is a pointer; moving it is the release. MLflow keeps only the
current pointer, so every move is also written as a registered-model tag `lamina.move.NNNNNN`
— in the shared store, beside the alias. Write-ahead: the move is tagged `pending`, then the
alias is set, then the tag is rewritten `done`. A crash between leaves a pending move that
readers settle by looking at the alias (it points at the move's target: applied) or, once a
later move of that alias exists, at where that later move started from. Each move is also an
operation (lamina.registry.ops): its record carries the operation id, so the next command
writes the audit entry a killed one did not, and a retry reports "already done".
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.governance import access, audit, incidents, journal
from lamina.recipe import RegistrySpec
from lamina.registry import ops, tracking, verdicts
from lamina.registry.anchor import anchor
from lamina.registry.moves import MOVE_PREFIX, move_tag, took_effect
from lamina.registry.versions import (
    all_versions,
    check_name,
    crashpoint,
    get_version,
    local_dir,
    model_lock,
    now,
    verify_version,
)

ROLLOUT_PREFIX = "lamina.rollout."  # the rollout record's state tag per alias (lamina/rollout/record.py)


def current(name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(tracking.client().get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {name}@{alias}", e) from None
        return None


def moves(name: str) -> list[dict]:
    """Every applied move of `name`'s aliases, oldest first (pending moves settled)."""
    from mlflow.exceptions import MlflowException

    try:
        model = tracking.client().get_registered_model(check_name(name))
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {name}", e) from None
        raise LaminaError("no such registered model", name) from None
    records = [json.loads(v) for k, v in sorted(model.tags.items()) if k.startswith(MOVE_PREFIX)]
    settled = []
    for move in records:
        if move["state"] == "aborted":
            continue
        if move["state"] == "pending":
            if not took_effect(move, records, current(name, move["alias"])):
                continue
            move = {**move, "state": "done", "settled": True}
        settled.append(move)
    return settled


def _require_model(name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client().get_registered_model(name)
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {name}", e) from None
        raise LaminaError("no such registered model", name) from None


def write_move(name: str, move: dict) -> None:
    tracking.client().set_registered_model_tag(name, move_tag(move), json.dumps(move))


def _next_n(name: str) -> int:
    tags = tracking.client().get_registered_model(name).tags
    return 1 + max((int(k[len(MOVE_PREFIX) :]) for k in tags if k.startswith(MOVE_PREFIX)), default=0)


def _move(name: str, alias: str, version: int, op: str, user: str, reason: str | None, key: str) -> dict:
    before, reason = current(name, alias), (reason or "")[:1000]
    with journal.operation(ops.domain(name), op, user, ops.PROBES[op], key=key, name=name, alias=alias,
                           version=version, previous=before, reason=reason) as intent:
        move = {"n": _next_n(name), "op": op, "alias": alias, "from": before, "to": version, "user": user,
                "reason": reason, "time": now(), "state": "pending", "op_id": intent.op_id, "key": key}
        c = tracking.client()
        with tracking.server_errors(f"moving {name}@{alias}"):
            write_move(name, move)
            crashpoint(f"{op}.pending")
            c.set_registered_model_alias(name, alias, str(version))
            crashpoint(f"{op}.aliased")
            move["state"] = "done"
            write_move(name, move)
        intent.result.update(version=version)
    anchor(name, intent.result["entry"])
    return move


def _chain_runs(path: Path, depth: int = 16) -> set[str]:
    """Every run a registered version came from: its own stages and those of the versions it
    was fine-tuned from (read from the signed lineage records)."""
    runs: set[str] = set()
    while path is not None and depth:
        record = read_json(path / "lineage.json") if (path / "lineage.json").is_file() else {}
        runs |= {str(r.get("id")) for r in record.get("runs") or [] if r.get("id")}
        runs.add(str(record.get("run_id")))
        parent, path, depth = record.get("parent"), None, depth - 1
        if parent:
            with contextlib.suppress(LaminaError):
                path = local_dir(get_version(parent["name"], int(parent["version"])))
    return runs


def check_not_withdrawn(mv, path: Path) -> None:
    """A version built on records a data subject withdrew (or whose retention ended) must be
    retrained, not released: `lamina data forget` marked its runs."""
    from lamina.data import catalog

    if not catalog.db_path().exists():
        return
    from sqlalchemy import select

    runs = _chain_runs(path)
    with catalog.session() as s:
        hit = s.scalars(select(catalog.RetrainRequired).where(catalog.RetrainRequired.run.in_(runs))).first()
        if hit is not None:
            raise LaminaError(
                f"trained on withdrawn records (run {hit.run}: {hit.reason}, {hit.at[:10]}); "
                "retrain it on the new dataset version before promoting",
                f"{mv.name}/{mv.version}",
            )


def _done_before(name: str, alias: str, settled: list[dict], key: str, strict: bool, user: str) -> dict | None:
    """The move a retry of this command (same key) already made: one a killed run of it left,
    settled just now or by another command since (then it is still the alias's last move,
    marked unreported, and by the same user) — or, with an explicit operation id, any
    recorded move of that id. Reporting it clears the mark: the same command once more is
    a new move (a second rollback goes back one release further)."""
    hit = journal.settled_by_key(settled, key)
    recorded = [m for m in moves(name) if m["alias"] == alias]
    for move in reversed(recorded):
        if (hit and move.get("op_id") == hit["op"]) or (strict and move.get("key") == key):
            return _reported(name, move)
    last = recorded[-1] if recorded else None
    if (last and last.get("unreported") and last.get("key") == key and last.get("user") == user
            and current(name, alias) == last["to"]):
        return _reported(name, last)
    return None


def _reported(name: str, move: dict) -> dict:
    if move.get("unreported"):
        move = {k: v for k, v in move.items() if k not in ("unreported", "settled")}
        write_move(name, move)
    return {**move, "already_done": True}


def trainers(mv) -> set[str]:
    """Who trained a version: the registered record and the MLflow run the trainer logged when
    training ended (so editing run.json before registering does not change the answer)."""
    names = {mv.tags.get("lamina.trained_by")}
    with tracking.server_errors(f"reading the run of {mv.name}/{mv.version}"):
        names.add(tracking.client().get_run(mv.run_id).data.tags.get("lamina.user"))
    return {n for n in names if n}


def check_alias(alias: str) -> str:
    allowed = RegistrySpec().aliases
    if alias not in allowed:
        raise LaminaError(f"unknown alias; use one of {', '.join(allowed)}", f"alias {alias!r}")
    return alias


def promote(name: str, version: int, to: str, reason: str | None = None, check_only: bool = False,
            op_id: str | None = None, rollout: str | None = None) -> dict:
    """Point alias `to` at `version` after checking permission, gate, signature and four eyes;
    an open incident on the model freezes it. `check_only`: the checks alone (a rollout asks
    them before it sends the version traffic). A retry of a promote a kill interrupted (or of
    the same `op_id`) is `already_done`. `rollout`: the id of the rollout completing itself;
    any other promotion of an alias under an active rollout is refused."""
    check_alias(to)
    user = access.require(f"promote.{to}")
    incidents.check_not_frozen(name)
    mv = get_version(name, version)  # an unknown model or version is named here, first
    if not check_only:
        check_no_rollout(name, to, rollout)
    if mv.tags.get("lamina.gate") != "passed":
        access.refused("gate", "no passing gate recorded", user=user, name=name, version=int(version), alias=to)
        raise LaminaError(
            "this version has no passing gate recorded; it cannot be promoted", f"{name}/{version}"
        )
    # The gate and signature are checked on the files that would be served, not just the tags.
    path, _ = verify_version(mv)
    _, gate = verdicts.governing(mv, path)
    _check_champion(mv, gate, to)
    check_not_withdrawn(mv, path)
    policy = access.load_policy()
    trained = trainers(mv) if to in policy.four_eyes else set()
    made = "trained" if user in trained else "registered"
    if to in policy.four_eyes and user in trained | {mv.tags.get("lamina.registered_by")}:
        access.refused("four-eyes", f"{user} {made} this version", user=user, name=name,
                       version=int(version), alias=to)
        raise LaminaError(
            f"four-eyes policy: {user!r} {made} this version and cannot also approve it for {to}; "
            "another approver must promote it",
            f"{name}/{version}",
        )
    if check_only:
        return {"user": user, "name": name, "version": int(version), "alias": to}
    key = op_id or journal.args_key("promote", name=name, alias=to, version=int(version))
    with model_lock(name):
        done = _done_before(name, to, settle(name), key, strict=op_id is not None, user=user)
        if done is not None:
            return done
        if current(name, to) == int(version):
            raise LaminaError(f"{to} already points at version {version}", f"{name}@{to}")
        _check_champion(mv, gate, to)  # again under the lock: production may have moved meanwhile
        return _move(name, to, int(version), "promote", user, reason, key)


def _check_champion(mv, gate: dict, to: str) -> None:
    if to == verdicts.CHAMPION_ALIAS:
        try:
            verdicts.check_champion(mv, gate, to, current(mv.name, to))
        except LaminaError as e:  # a stale gate is a gate refusal: audited like the others
            access.refused("gate", str(e), name=mv.name, version=int(mv.version), alias=to)
            raise


def check_no_rollout(name: str, alias: str, completing: str | None) -> None:
    """A rollout owns its alias until it completes or is aborted: a plain promote would move
    the alias under the traffic split the servers are following."""
    raw = tracking.client().get_registered_model(check_name(name)).tags.get(f"{ROLLOUT_PREFIX}{alias}")
    state = json.loads(raw) if raw else None
    if state and state.get("state") == "active" and state.get("id") != completing:
        raise LaminaError(
            f"rollout {state.get('id')} of version {state.get('challenger')} is active on {alias}: "
            f"finish it with `lamina rollout complete {name}` or `lamina rollout abort {name} --reason ...`",
            f"{name}@{alias}",
        )


def rollback(name: str, alias: str, reason: str, op_id: str | None = None) -> dict:
    """Point `alias` back at the version it held before the current one, recording why.

    Never twice for one command: a retry after a kill finds the interrupted rollback and
    reports it `already_done`; with `op_id`, so does any later retry of that operation."""
    check_alias(alias)
    user = access.require("rollback")
    if not (reason or "").strip():
        raise LaminaError("a rollback needs a reason (--reason)", f"{name}@{alias}")
    _require_model(check_name(name))  # before the lock: a lock must not create `registry/<unknown>/`
    key = op_id or journal.args_key("rollback", name=name, alias=alias, reason=reason)
    with model_lock(name):
        done = _done_before(name, alias, settle(name), key, strict=op_id is not None, user=user)
        if done is not None:
            return done
        stack: list[int] = []
        for move in moves(name):
            if move["alias"] != alias:
                continue
            if move["op"] == "rollback":
                stack.pop()
            else:
                stack.append(move["to"])
        now_at = current(name, alias)
        if not stack or stack[-1] != now_at:
            raise LaminaError(
                f"{alias} points at {now_at}, which Lamina's history did not put there; "
                "move it with `lamina promote` instead",
                f"{name}@{alias}",
            )
        if len(stack) < 2:
            raise LaminaError(
                f"no earlier version was at {alias}; nothing to roll back to", f"{name}@{alias}"
            )
        target = stack[-2]
        verify_version(get_version(name, target))
        return _move(name, alias, target, "rollback", user, reason, key)


# --- incident drills (lamina.rollout.drill): roll back, then forward, as one operation ---------


def _drilled(intent: journal.Intent) -> dict | None:
    """A drill a kill interrupted: None when its roll-back never happened (the alias is where
    it started); else the forward leg is finished now — as the drill's user, unless the alias
    moved since or an incident froze the model — and what happened is returned."""
    name, alias, start = intent.details["name"], intent.details["alias"], intent.details["from"]
    back_key, forward_key = ops.drill_keys(intent.op_id)
    recorded = [m for m in moves(name) if m["alias"] == alias]
    back = next((m for m in recorded if m.get("key") == back_key), None)
    if back is None:
        return None
    found = {"rolled_back_to": back["to"], "interrupted": True}
    if not any(m.get("key") == forward_key for m in recorded):
        if recorded[-1]["n"] != back["n"]:
            return {**found, "restored": False, "left": "the alias moved after the drill's roll-back"}
        try:
            incidents.check_not_frozen(name)
        except LaminaError as e:
            return {**found, "restored": False, "left": str(e)[:300]}
        _move(name, alias, start, "promote", intent.user,
                      "incident drill: roll forward (finishing an interrupted drill)", forward_key)
    return {**found, "restored": current(name, alias) == start}


def settle(name: str, probes: dict[str, journal.Probe] | None = None) -> list[dict]:
    """lamina.registry.ops.settle, then drills a kill interrupted (once their legs are settled):
    the next command on the model ends such a drill with the alias where it began."""
    return ops.settle(name, probes) + _settle_drills(name)


def _settle_drills(name: str) -> list[dict]:
    settled = []
    for intent in journal.pending(ops.domain(name)):
        if intent.action != "incident.drill" or ops.live(intent):
            continue
        found = _drilled(intent)
        if found is not None and intent.op_id not in journal.audited_ops():
            anchor(name, audit.record(intent.action, user=intent.user, op=intent.op_id, settled=True,
                                      **{**intent.details, **found}))
        intent.path.unlink(missing_ok=True)
        settled.append({"op": intent.op_id, "key": intent.key, "action": intent.action,
                        "applied": found is not None, "details": {**intent.details, **(found or {})}})
    return settled


def history(name: str) -> list[dict]:
    """Registrations and alias moves of `name`, oldest first."""
    events = []
    for mv in all_versions(name):
        events.append(
            {
                "op": "register",
                "version": int(mv.version),
                "user": mv.tags.get("lamina.registered_by"),
                "time": _iso(mv.creation_timestamp),
                "run": mv.tags.get("lamina.run_id"),
                "gate": mv.tags.get("lamina.gate"),
            }
        )
    events.sort(key=lambda e: e["version"])
    # Stable sort: a registration and a move in the same second keep that order.
    return sorted(events + moves(name), key=lambda e: e["time"])


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat(timespec="milliseconds")
