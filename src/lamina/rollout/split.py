"""Who answers a request during a rollout: a sticky split by caller, and shadow copies.

Canary: a caller (API key identity, or the request's `user` field when one key serves many
people) is hashed with the rollout's id into one of 10,000 buckets; buckets below share x 100
go to the challenger. The same caller lands on the same version for the whole rollout, a new
rollout reshuffles, and raising the share only moves callers from champion to challenger.
Shadow: users always get the champion; the challenger answers a copy, compared afterwards.
"""

from __future__ import annotations

import hashlib
import unicodedata

BUCKETS = 10_000


def bucket(rollout_id: str, caller: str) -> int:
    digest = hashlib.sha256(f"{rollout_id}\0{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(rollout: dict | None, caller: str) -> str:
    """`challenger` or `champion` for this caller under `rollout` (a record.state dict)."""
    if not rollout or rollout["state"] != "active" or rollout["mode"] != "canary":
        return "champion"
    return (
        "challenger"
        if bucket(rollout["id"], caller) < round(rollout["share"] * BUCKETS / 100)
        else "champion"
    )


def version_for(rollout: dict | None, champion: int, caller: str) -> int:
    """The version number that answers `caller` (the champion when no rollout is active)."""
    return int(rollout["challenger"]) if assign(rollout, caller) == "challenger" else champion


def shadow_of(rollout: dict | None) -> int | None:
    """The version that answers a copy of every request, if the rollout is a shadow."""
    if rollout and rollout["state"] == "active" and rollout["mode"] == "shadow":
        return int(rollout["challenger"])
    return None


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def agree(champion_text: str, challenger_text: str) -> bool:
    """Same answer up to case, Unicode form and whitespace."""
    return _normal(champion_text) == _normal(challenger_text)
