"""Every piece of governed state has its audit entry: the check `lamina audit verify` adds.

The hash chain shows that no entry was edited or removed; it cannot show an entry that was
never written. So this walks the state itself — catalog sources and dataset versions,
registered model versions, alias moves, server API keys — and names every piece that no audit entry accounts
for, plus any operation a kill left unsettled. (Where an alias points now is checked against
its moves by lamina.registry.anchor.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lamina import workspace
from lamina.governance import audit, journal


def check() -> list[str]:
    """Problems: state without a matching audit entry, and interrupted operations."""
    entries = audit.entries()
    problems = [
        f"operation {i.action} {i.op_id[:12]} ({i.details}) was interrupted; the next command of its kind "
        "settles it" for i in journal.pending()
    ]  # fmt: skip
    return problems + _catalog(entries) + _registry(entries) + _api_keys(entries)


def _of(entries: list[dict], *actions: str) -> list[dict]:
    return [e.get("details") or {} for e in entries if e.get("action") in actions]


def _catalog(entries: list[dict]) -> list[str]:
    from sqlalchemy import select

    from lamina.data import catalog

    if not catalog.db_path().exists():
        return []
    sources = {d.get("source") for d in _of(entries, "data.add")}
    versions = {d.get("version") for d in _of(entries, "data.intake")}
    versions |= {v.get("new") for d in _of(entries, "data.forget", "data.sweep") for v in d.get("versions", [])}
    with catalog.session() as s:
        rows = list(s.scalars(select(catalog.Source)))
        vers = list(s.scalars(select(catalog.Version)))
    problems = [f"data source {r.name!r} has no data.add audit entry" for r in rows if r.name not in sources]
    problems += [f"dataset version {v.id[:12]} ({v.name}) has no audit entry that made it"
                 for v in vers if v.id not in versions]  # fmt: skip
    return problems


def _api_keys(entries: list[dict]) -> list[str]:
    """Server API keys (lamina.serve.keys' store, read as a file: serve sits above this layer).
    A pending key is not one: no server accepts it, and the next keys command removes it."""
    from lamina.fsio import read_json

    path = workspace.home() / "serve" / "keys.json"
    if not path.exists():
        return []
    try:
        records = [r for r in read_json(path)["keys"] if not r.get("pending")]
    except (ValueError, KeyError, TypeError):
        return [f"{path}: not a key store Lamina wrote"]
    issued = {d.get("key") for d in _of(entries, "serve.key.issue")}
    revoked = {d.get("key") for d in _of(entries, "serve.key.revoke")}
    problems = [f"API key {r.get('id')} ({r.get('user')}) has no serve.key.issue audit entry"
                for r in records if r.get("id") not in issued]  # fmt: skip
    return problems + [f"API key {r.get('id')} was revoked without a serve.key.revoke audit entry"
                       for r in records if r.get("revoked") and r.get("id") not in revoked]


def _registry(entries: list[dict]) -> list[str]:
    from lamina.registry import aliases, tracking, versions

    uri = tracking.tracking_uri()
    if tracking.is_embedded(uri) and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    registered = {(d.get("name"), d.get("version")) for d in _of(entries, "register")}
    moved = Counter((e["action"], d.get("name"), d.get("alias"), d.get("version"))
                    for e in entries if e.get("action") in ("promote", "rollback") for d in [e["details"]])
    mine = str(workspace.subdir("registry").resolve())
    problems = []
    for model in tracking.client().search_registered_models():
        name = model.name
        for mv in versions.all_versions(name):
            local = str(mv.tags.get("lamina.path", "")).startswith(mine)
            if (tracking.is_embedded(uri) or local) and (name, int(mv.version)) not in registered:
                problems.append(f"registered version {name}/{mv.version} has no register audit entry")
        history = aliases.moves(name)
        for key, n in Counter((m["op"], name, m["alias"], m["to"]) for m in history).items():
            if moved[key] < n:
                problems.append(f"{key[0]} of {name}@{key[2]} to version {key[3]} has no audit entry")
    return problems  # an alias moved outside Lamina altogether: anchor.alias_problems
