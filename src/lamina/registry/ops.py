"""Register, promote and rollback as audited operations that a kill cannot split or repeat.

Each runs under the model's lock with an intent (lamina.governance.journal). The change
carries the intent's operation id into MLflow in the same call that makes it — a version's
`lamina.op` tag, a move record's `op_id` field — so the next command on that model can tell
whether a killed one took effect: it writes the missing audit entry (and its anchor) or
drops the intent. A retry of the same command finds its own settled intent by key and
reports "already done". (Below versions.py and aliases.py, which both settle through here.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator

from lamina.governance import journal
from lamina.registry import tracking
from lamina.registry.anchor import anchor
from lamina.registry.moves import MOVE_PREFIX, move_tag, took_effect


def domain(name: str) -> str:
    return f"model.{name}"


def _registered(intent: journal.Intent) -> dict | None:
    c, name, token = tracking.client(), intent.details["name"], None
    while True:
        page = c.search_model_versions(f"name = '{name}'", page_token=token)
        for mv in page:
            if mv.tags.get("lamina.op") == intent.op_id:
                return {"version": int(mv.version)}
        token = page.token
        if not token:
            return None


def _points_at(name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(tracking.client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _moved(intent: journal.Intent) -> dict | None:
    """Applied if the move record with this operation id took effect (settling it as done);
    a pending record that never took effect is marked aborted."""
    name = intent.details["name"]
    tags = tracking.client().get_registered_model(name).tags
    records = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(MOVE_PREFIX)]
    mine = next((m for m in records if m.get("op_id") == intent.op_id), None)
    if mine is None:
        return None
    before = mine
    if mine["state"] == "pending":
        applied = took_effect(mine, records, _points_at(name, mine["alias"]))
        mine = {**mine, "state": "done" if applied else "aborted"}
    if mine["state"] == "done":
        # Its command never said it was done: its retry will (lamina.registry.aliases).
        mine = {**mine, "unreported": True}
    if mine != before:
        tracking.client().set_registered_model_tag(name, move_tag(mine), json.dumps(mine))
    if mine["state"] != "done":
        return None
    return {"version": mine["to"], "previous": mine["from"]}


PROBES: dict[str, journal.Probe] = {"register": _registered, "promote": _moved, "rollback": _moved}


def settle(name: str, probes: dict[str, journal.Probe] | None = None) -> list[dict]:
    """Finish or undo what killed registry commands on `name` left; call with its lock held.
    `probes` add the actions of a layer above (rollouts), settled only by that layer's commands.
    (Interrupted drills are settled after this by lamina.registry.aliases.settle.)"""
    return journal.settle(domain(name), {**PROBES, **(probes or {})}, on_entry=lambda _, entry: anchor(name, entry))


# --- incident drills (lamina.rollout.drill): roll back, then forward, as one operation ---------


def drill_keys(op_id: str) -> tuple[str, str]:
    """The operation keys of a drill's two legs (its rollback and its promote)."""
    return f"{op_id}.back", f"{op_id}.forward"


def _live_path(name: str, alias: str) -> str:
    return str(journal.intents_dir(domain(name)) / f".drill-{alias}.live")


@contextlib.contextmanager
def drill_running(name: str, alias: str) -> Iterator[None]:
    """Held for a whole drill on `name@alias` (one drill per alias at a time): while it is held,
    no command takes the drill's intent for one a kill left behind."""
    with open(_live_path(name, alias), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def live(intent: journal.Intent) -> bool:
    """Whether the drill of this intent is still running (its process holds `drill_running`)."""
    try:
        f = open(_live_path(intent.details["name"], intent.details["alias"]))  # noqa: SIM115
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: fails in the drill's own process too
        except BlockingIOError:
            return True
    return False
