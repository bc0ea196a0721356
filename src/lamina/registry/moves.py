"""Alias move records: every move of an alias is a registered-model tag `lamina.move.NNNNNN`
(written by aliases.py), and a read of an alias is checked against the last of them."""

from __future__ import annotations

import json

MOVE_PREFIX = "lamina.move."


def move_tag(move: dict) -> str:
    """The registered-model tag that holds a move record."""
    return f"{MOVE_PREFIX}{move['n']:06d}"


def took_effect(move: dict, records: list[dict], points_at: int | None) -> bool:
    """Whether a move still marked pending was applied: the next move of its alias started
    from its target (moves never go from a version to itself), or, with none, the alias
    points there now (`points_at`)."""
    later = [m for m in records if m["alias"] == move["alias"] and m["n"] > move["n"]]
    if later:
        return later[0]["from"] == move["to"]
    return points_at == move["to"]


def alias_problem(model_tags: dict, alias: str, points_at: int) -> str | None:
    """Why `alias` pointing at `points_at` is not what Lamina's recorded moves say, or None.

    MLflow's own API (what its UI's alias editor calls) moves an alias without Lamina: no
    move record, no audit entry, no gate or four-eyes check. A pending move (killed between
    its record and its mark) may or may not have been applied: either end is accepted."""
    recorded = [json.loads(v) for k, v in sorted(model_tags.items()) if k.startswith(MOVE_PREFIX)]
    # An aborted move (killed before it took effect, settled by the next command) moved nothing.
    recorded = [m for m in recorded if m.get("alias") == alias and m.get("state") != "aborted"]
    if not recorded:
        return f"alias {alias} points at version {points_at} but Lamina never moved it"
    last = recorded[-1]
    allowed = {last["to"]} | ({last["from"]} if last["state"] == "pending" else set())
    if points_at not in allowed:
        return (f"alias {alias} points at version {points_at}, but Lamina's last recorded move put it at "
                f"{last['to']} ({last['op']} by {last['user']} at {last['time']}): it was moved outside Lamina")
    return None
