"""The rollout record in the registry, where every server replica reads it.

Per alias, the registered-model tag `lamina.rollout.<alias>` holds the rollout's current
state (champion, challenger, mode, share, guards, state); each change is also an event tag
`lamina.rollout_event.NNNNNN` (who, why, what). Write-ahead as for alias moves: the event is
written `pending`, then the state (naming the event it applies), then the event `done`. A
crash between leaves a pending event that readers settle against the state: applied if the
state names it, dropped if not.
"""

from __future__ import annotations

import json

from lamina.errors import LaminaError
from lamina.registry import aliases, tracking
from lamina.registry.versions import check_name, now

STATE_PREFIX = aliases.ROLLOUT_PREFIX
EVENT_PREFIX = "lamina.rollout_event."
ACTIVE = "active"
ENDED = ("completed", "aborted", "rolled_back")


def _tags(name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_registered_model(check_name(name)).tags
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {name}", e) from None
        raise LaminaError("no such registered model", name) from None


def state(name: str, alias: str) -> dict | None:
    """The latest rollout of `name@alias` (active or ended), or None if there never was one."""
    raw = _tags(name).get(f"{STATE_PREFIX}{alias}")
    return json.loads(raw) if raw else None


def active(name: str, alias: str) -> dict | None:
    current = state(name, alias)
    return current if current and current["state"] == ACTIVE else None


def all_states(name: str) -> list[dict]:
    tags = _tags(name)
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(STATE_PREFIX)]


def events(name: str) -> list[dict]:
    """Every applied rollout event of `name`, oldest first (pending ones settled)."""
    tags = _tags(name)
    states = {json.loads(v)["alias"]: json.loads(v) for k, v in tags.items() if k.startswith(STATE_PREFIX)}
    out = []
    for k, v in sorted(tags.items()):
        if not k.startswith(EVENT_PREFIX):
            continue
        event = json.loads(v)
        if event["state"] == "pending":
            applied = states.get(event["alias"], {}).get("event") == event["n"]
            if not applied:
                continue
            event = {**event, "state": "done", "settled": True}
        out.append(event)
    return out


def _next_n(tags: dict[str, str]) -> int:
    return 1 + max((int(k[len(EVENT_PREFIX) :]) for k in tags if k.startswith(EVENT_PREFIX)), default=0)


def write(name: str, new_state: dict, op: str, user: str, reason: str | None, **details) -> dict:
    """Apply `new_state` for its alias as event `op`; the caller holds the model lock."""
    c = tracking.client()
    n = _next_n(_tags(name))
    event = {
        "n": n,
        "op": op,
        "alias": new_state["alias"],
        "rollout": new_state["id"],
        "champion": new_state["champion"],
        "challenger": new_state["challenger"],
        "mode": new_state["mode"],
        "share": new_state["share"],
        "user": user,
        "reason": (reason or "")[:1000],
        "time": now(),
        "details": details,
        "state": "pending",
    }
    new_state = {**new_state, "event": n, "updated": event["time"]}
    with tracking.server_errors(f"recording the rollout of {name}@{new_state['alias']}"):
        c.set_registered_model_tag(name, f"{EVENT_PREFIX}{n:06d}", json.dumps(event))
        c.set_registered_model_tag(name, f"{STATE_PREFIX}{new_state['alias']}", json.dumps(new_state))
        event["state"] = "done"
        c.set_registered_model_tag(name, f"{EVENT_PREFIX}{n:06d}", json.dumps(event))
    return new_state
