"""The demo's release story in one call: register, promote, register again, promote, roll back.

The four-eyes rule needs a second person to approve production; the demo plays that person
as `demo-approver` (its personal key made on this machine, enrolled and granted the approver
role by the workspace admin, audited like any grant).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from lamina import workspace
from lamina.governance import access, identity
from lamina.registry import aliases, lineage, signing, tracking, versions

DEMO_APPROVER = "demo-approver"


@contextlib.contextmanager
def acting_as(user: str) -> Iterator[None]:
    previous = os.environ.get("LAMINA_USER")
    os.environ["LAMINA_USER"] = user
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LAMINA_USER", None)
        else:
            os.environ["LAMINA_USER"] = previous


def _approver(trainer: str) -> str:
    """Someone other than the trainer who may approve production and whose personal key this
    machine holds; else the demo's own approver (its key made here, enrolled by the admin)."""
    policy = access.ensure_policy()
    for user in policy.users:
        if user != trainer and access.allowed(user, "promote.production", policy) and \
                identity.own_public(user) in policy.keys.get(user, [])[-1:]:
            return user
    if identity.own_public(DEMO_APPROVER) is None:
        with acting_as(DEMO_APPROVER):
            identity.create_key(DEMO_APPROVER)
    access.grant(DEMO_APPROVER, "approver")
    return DEMO_APPROVER


def render_history(events: list[dict]) -> str:
    lines = []
    for e in events:
        if e["op"] == "register":
            lines.append(
                f"{e['time']}  register  v{e['version']} by {e['user']} (run {e['run']}, gate {e['gate']})"
            )
        else:
            lines.append(
                f"{e['time']}  {e['op']:<8}  {e['alias']}: {e['from'] or '-'} -> {e['to']} by {e['user']}"
                + (f" ({e['reason']})" if e.get("reason") else "")
            )
    return "\n".join(lines)


def demo_release(run_dir_a: str | Path, run_dir_b: str | Path | None, name: str = "support-tickets",
                 recheck: Callable[[str], object] | None = None) -> dict:
    """Register and promote run a, then run b and roll back to a; with no run b (a method
    whose first stage cannot be merged has no second stage), run a alone is released.
    `recheck(ref)` re-checks b's gate against a, now the champion, before b is promoted (run
    b was evaluated before a was released: `lamina eval NAME/VERSION --gates-only`).
    Returns {versions, production, history, history_text, lineage, lineage_text}."""
    signing.ensure_keys()
    trainer = tracking.read_run(Path(run_dir_a)).get("user") or workspace.user()
    approver = _approver(trainer)
    released = [versions.register(run_dir_a, name)]
    with acting_as(approver):
        aliases.promote(name, released[0]["version"], "production", reason="first release")
    if run_dir_b is not None:
        released.append(versions.register(run_dir_b, name))
        if recheck is not None:
            recheck(f"{name}/{released[1]['version']}")
        with acting_as(approver):
            aliases.promote(name, released[1]["version"], "production", reason="second release")
        aliases.rollback(name, "production", reason="demo: roll back the second release")
    events = aliases.history(name)
    info = lineage.lineage(f"{name}@production")
    return {
        "versions": released,
        "production": aliases.current(name, "production"),
        "history": events,
        "history_text": render_history(events),
        "lineage": info,
        "lineage_text": lineage.render(info),
    }
