"""API keys for the server: only a hash is stored. A key belongs to an identity in the policy
(role `consumer`: may call), names the models it may call, and may carry a request rate
(`20/s`) and a token budget (`200000/h`). Issue and revoke are audit-logged; the store is
`<workspace>/serve/keys.json`, written atomically and re-read by the server when it changes,
so a revocation takes effect on the next request.

A key is `lmn_<id>_<secret>`; the id finds the record, the secret's sha256 is compared in
constant time. Secrets are 256 random bits, so a plain hash is enough (no slow KDF needed).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json, write_json

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LIMIT = re.compile(r"^(\d+)/([smhd])$")
_KEY = re.compile(r"^lmn_([a-z0-9]{12})_([A-Za-z0-9_-]{20,})$")


def store_path() -> Path:
    return workspace.home() / "serve" / "keys.json"  # not created by reading (write_json makes it)


def parse_limit(text: str | None, flag: str) -> tuple[int, float] | None:
    """`20/s` -> (20, 1.0); None stays None."""
    if text is None:
        return None
    m = _LIMIT.match(text.strip())
    if not m or int(m[1]) <= 0:
        raise LaminaError("a limit is COUNT/PERIOD with PERIOD one of s, m, h, d (e.g. 20/s)", f"{flag} {text!r}")
    return int(m[1]), PERIODS[m[2]]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _load() -> dict:
    path = store_path()
    if not path.exists():
        return {"keys": []}
    try:
        data = read_json(path)
    except ValueError as e:
        raise LaminaError(f"not valid JSON: {e}", str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise LaminaError("expected {\"keys\": [...]}", str(path))
    return data


def _ensure_role(role: str) -> None:
    """Workspaces made before the `consumer` role existed get it added (audited)."""
    from lamina.governance import access
    from lamina.recipe import DEFAULT_ROLES

    if role in access.load_policy().roles:
        return
    if role not in DEFAULT_ROLES:
        policy = access.load_policy()
        raise LaminaError(f"unknown role {role!r}; roles are {', '.join(policy.roles)}", str(access.policy_path()))
    access.add_role(role, list(DEFAULT_ROLES[role]))


DOMAIN = "serve.keys"  # the journal's domain (lamina.governance.journal): one lock, one intents folder


def _issued(intent) -> dict | None:
    """Whether a `keys issue` a kill interrupted committed its key. A key still marked pending
    was stored but its issue never completed — its secret may never have been shown — so it
    is taken out of the store here (see `issue`)."""
    data = _load()
    record = next((r for r in data["keys"] if r.get("op") == intent.op_id), None)
    if record is None:
        return None
    if record.get("pending"):
        data["keys"] = [r for r in data["keys"] if r is not record]
        write_json(store_path(), data)
        _UNDONE.append(record["id"])
        return None
    return {"key": record["id"]}


def _revoked(intent) -> dict | None:
    record = next((r for r in _load()["keys"] if r.get("revoked_op") == intent.op_id), None)
    return None if record is None else {"key": record["id"]}


_UNDONE: list[str] = []  # ids of keys whose interrupted issue `_issued` took back, to say so


def settle() -> tuple[list[dict], list[str]]:
    """Finish or undo what a killed `keys issue`/`revoke` left; with the lock held. Returns the
    settled operations and notes for the user (a key taken back because it was never confirmed)."""
    from lamina.governance import journal

    _UNDONE.clear()
    settled = journal.settle(DOMAIN, {"serve.key.issue": _issued, "serve.key.revoke": _revoked})
    notes = [f"key {k}: its `keys issue` was interrupted before the key was confirmed, so its secret may "
             "never have been shown; it was removed and never works (issue another)" for k in _UNDONE]
    return settled, notes


def issue(user: str, role: str = "consumer", models: list[str] | None = None, rate: str | None = None,
          tokens: str | None = None, show=None) -> dict:
    """Make a key for `user` (granted `role` if not held); returns the record and the key,
    which is shown this once and never stored.

    The key is stored marked pending, handed to `show` (the CLI prints it), and only then
    confirmed and audited: a kill before the confirmation leaves a pending key that no server
    accepts and that the next keys command removes, saying so — a secret is never live unless
    it was handed over. A retry after a kill past the confirmation reports "already done"
    (`already_done`, no key) instead of issuing a second one."""
    from lamina import faults
    from lamina.governance import access, journal

    actor = access.require("keys")
    parse_limit(rate, "--rate")
    parse_limit(tokens, "--tokens")
    if not re.match(r"^[\w.@-]{1,100}$", user or ""):
        raise LaminaError("an identity is letters, digits, '.', '_', '@' or '-'", f"--user {user!r}")
    args = {"identity": user, "role": role, "models": models or ["*"], "rate": rate, "tokens": tokens}
    with journal.locked(DOMAIN):
        settled, notes = settle()
        done = journal.settled_by_key(settled, journal.args_key("serve.key.issue", actor=actor, **args))
        if done:
            return {**args, "id": done["details"]["key"], "already_done": True, "notes": notes}
        _ensure_role(role)
        if role not in access.load_policy().users.get(user, []):
            access.grant(user, role)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        op = journal.begin(DOMAIN, "serve.key.issue", actor, journal.args_key("serve.key.issue", actor=actor, **args),
                           **args)
        record = {"id": key_id, "hash": _hash(secret), "user": user, "role": role, "models": args["models"],
                  "rate": rate, "tokens": tokens, "created": _now(), "created_by": actor, "revoked": None,
                  "op": op.op_id, "pending": True}
        data = _load()
        data["keys"].append(record)
        write_json(store_path(), data)
        faults.point("serve.key.issue.stored")
        result = {**_public(record), "key": f"lmn_{key_id}_{secret}", "notes": notes}
        result.pop("pending")
        try:
            if show is not None:
                show(result)
                faults.point("serve.key.issue.shown")
            _confirm(key_id)
        except BaseException:
            _issued(op)  # not confirmed: take the key back (it may not have been shown)
            op.path.unlink(missing_ok=True)
            raise
        journal.complete(op, key=key_id)
        return result


def _confirm(key_id: str) -> None:
    data = _load()
    for r in data["keys"]:
        if r["id"] == key_id:
            r.pop("pending", None)
    write_json(store_path(), data)


def revoke(key_id: str) -> dict:
    """Revoke a key, audited once even across a kill; a retry of a revocation a kill
    interrupted reports it (`already_done`)."""
    from lamina.governance import access, journal

    actor = access.require("keys")
    if not any(r["id"] == key_id for r in _load()["keys"]):
        raise LaminaError("no such key", f"key {key_id}")  # before the lock: a refusal leaves nothing
    with journal.locked(DOMAIN):
        settled, notes = settle()
        key = journal.args_key("serve.key.revoke", actor=actor, key=key_id)
        data = _load()
        record = next((r for r in data["keys"] if r["id"] == key_id and not r.get("pending")), None)
        if record is None:
            raise LaminaError("no such key", f"key {key_id}")
        if journal.settled_by_key(settled, key):
            return {**_public(record), "already_done": True, "notes": notes}
        if record["revoked"]:
            raise LaminaError("key already revoked", f"key {key_id}")
        with journal.operation(DOMAIN, "serve.key.revoke", actor, _revoked, key, identity=record["user"]) as op:
            record["revoked"], record["revoked_op"] = _now(), op.op_id
            write_json(store_path(), data)
            op.result["key"] = key_id
        return {**_public(record), "notes": notes}


def listing(notes: list[str] | None = None) -> list[dict]:
    """Every key (never a hash); `notes` receives what settling an interrupted command did."""
    from lamina.governance import access, journal

    access.require("keys")
    if journal.pending(DOMAIN):  # a read takes the lock only to settle what a kill left
        with journal.locked(DOMAIN):
            (notes if notes is not None else []).extend(settle()[1])
    return [_public(r) for r in _load()["keys"]]


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("hash", "op", "revoked_op")}


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Denied(Exception):
    status: int
    code: str
    message: str
    retry_after: float | None = None


class _Bucket:
    def __init__(self, count: int, period: float):
        self.capacity, self.rate = float(count), count / period
        self.level, self.stamp = float(count), time.monotonic()

    def take(self) -> float | None:
        """None when a request may go now, else seconds until one may."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            return None
        return (1 - self.level) / self.rate


class KeyStore:
    """The server's view of keys and policy: re-read when their files change; limits in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._keys: dict[str, dict] = {}
        self._policy = None
        self._buckets: dict[str, _Bucket] = {}
        self._spent: dict[str, deque] = {}

    def _refresh(self) -> None:
        from lamina.governance import access

        paths = (store_path(), access.policy_path())
        stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)
        if stamp != self._stamp:
            # A pending key's issue never completed (see `issue`): it does not exist yet.
            self._keys = {r["id"]: r for r in _load()["keys"] if not r.get("pending")}
            self._policy = access.load_policy() if paths[1].exists() else None
            self._stamp = stamp

    def authenticate(self, header: str | None) -> dict:
        """The key record for an `Authorization: Bearer ...` header, or Denied(401/403)."""
        from lamina.governance import access

        token = (header or "").removeprefix("Bearer ").strip() if header else ""
        if not token:
            raise Denied(401, "missing_key", "no API key (send Authorization: Bearer <key>)")
        m = _KEY.match(token)
        with self._lock:
            self._refresh()
            record = self._keys.get(m[1]) if m else None
            policy = self._policy
        if record is None or not hmac.compare_digest(record["hash"], _hash(m[2])):
            raise Denied(401, "invalid_api_key", "invalid API key")
        if record["revoked"]:
            raise Denied(401, "revoked_key", "this API key was revoked")
        if policy is None or not access.allowed(record["user"], "call", policy):
            raise Denied(403, "no_permission", f"identity {record['user']!r} may not call models (policy)")
        return record

    @staticmethod
    def may_call(record: dict, ref: str) -> bool:
        allowed = record["models"]
        name = re.split(r"[@/]", ref)[0]
        return "*" in allowed or ref in allowed or name in allowed

    def admit(self, record: dict) -> None:
        """Count a request against the key's rate and check its token budget (Denied 429)."""
        with self._lock:
            rate = parse_limit(record.get("rate"), "rate")
            if rate:
                bucket = self._buckets.setdefault(record["id"], _Bucket(*rate))
                wait = bucket.take()
                if wait is not None:
                    raise Denied(429, "rate_limit_exceeded", f"over this key's rate of {record['rate']}",
                                 math.ceil(wait))
            budget = parse_limit(record.get("tokens"), "tokens")
            if budget:
                spent = self._window(record["id"], budget[1])
                if sum(n for _, n in spent) >= budget[0]:
                    wait = spent[0][0] + budget[1] - time.monotonic()
                    raise Denied(429, "token_budget_exceeded", f"over this key's token budget of {record['tokens']}",
                                 max(1, math.ceil(wait)))

    def spend(self, record: dict, tokens: int) -> None:
        budget = parse_limit(record.get("tokens"), "tokens")
        if budget:
            with self._lock:
                self._window(record["id"], budget[1]).append((time.monotonic(), tokens))

    def _window(self, key_id: str, period: float) -> deque:
        spent = self._spent.setdefault(key_id, deque())
        while spent and spent[0][0] < time.monotonic() - period:
            spent.popleft()
        return spent
