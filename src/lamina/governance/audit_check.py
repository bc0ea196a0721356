"""Checks of the audit log beyond its hash chain: signatures and the head kept outside.

An entry signed by its actor must verify with a key enrolled for that actor in the signed
policy; an act that needs proof (promote, rollback, register, grants, key changes) must be
signed at all, unless a later command settled it after a kill. The head copied outside the
workspace (lamina.governance.audit.pin_path) must still be in the log with the same hash:
deleting the last entries and rewriting `head.json`, or editing the last entry and fixing
its hash and the head, leaves the chain valid but not this.
"""

from __future__ import annotations

from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.governance import access, audit, identity


def signature_problems(entries: list[dict]) -> list[str]:
    try:
        keys = access.read_policy().keys if access.policy_path().exists() else {}
    except LaminaError as e:
        return [f"cannot check signatures: {e}"]
    problems, signing = [], False  # entries before the first signed one predate personal keys
    for e in entries:
        sig, user, seq = e.get("sig"), e.get("user"), e.get("seq")
        details = e.get("details") if isinstance(e.get("details"), dict) else {}
        signing = signing or sig is not None
        if sig is None:
            # Settled: a later command wrote it after a kill; bootstrap: the workspace's first
            # signing key, made on first need by whoever evaluated or registered first.
            if signing and e.get("action") in audit.SIGNED and not (details.get("settled") or details.get("bootstrap")):
                problems.append(f"entry seq {seq} ({e.get('action')} by {user}) is not signed by its actor")
            continue
        public = identity.enrolled(str(user), keys).get(sig.get("key"))
        body = {k: v for k, v in e.items() if k not in ("hash", "sig")}
        if public is None:
            # A key never enrolled proves nothing: fatal for an act that needs proof; for
            # anything else (a refusal, an intake by someone with a fresh key) it is a claim.
            if e.get("action") in audit.SIGNED:
                problems.append(f"entry seq {seq} claims {user!r} but is signed with key {sig.get('key')}, "
                                f"not one enrolled for {user!r}")
        elif not identity.verify(public, identity.AUDIT + audit.entry_hash(body).encode(), sig.get("sig", "")):
            problems.append(f"entry seq {seq} ({e.get('action')} by {user}): signature does not verify "
                            "(edited after it was signed)")
    return problems


def pin_problems(entries: list[dict]) -> list[str]:
    """Where the log disagrees with the head kept outside the workspace."""
    path = audit.pin_path()
    if not path.is_file():
        return []
    pin = read_json(path)
    by_seq = {e.get("seq"): e for e in entries}
    last = max(by_seq, default=0)
    if pin["seq"] > last:
        return [f"truncated: the head kept outside the workspace ({path}) is seq {pin['seq']}, "
                f"the log ends at seq {last}"]
    if (by_seq.get(pin["seq"]) or {}).get("hash") != pin["hash"]:
        return [f"entry seq {pin['seq']} differs from the head kept outside the workspace ({path})"]
    return []


def check() -> list[str]:
    entries = audit.entries()
    return signature_problems(entries) + pin_problems(entries)


def refusals() -> dict:
    """`denied` entries counted by kind and by user, and the most recent few."""
    denied = [e for e in audit.entries() if e.get("action") == "denied"]
    by_kind: dict[str, int] = {}
    by_user: dict[str, int] = {}
    for e in denied:
        kind = (e.get("details") or {}).get("kind") or "role"
        by_kind[kind] = by_kind.get(kind, 0) + 1
        by_user[e.get("user")] = by_user.get(e.get("user"), 0) + 1
    recent = [{"seq": e["seq"], "time": e.get("time"), "user": e.get("user"), "signed": "sig" in e,
               **{k: v for k, v in (e.get("details") or {}).items() if k in ("kind", "permission", "message")}}
              for e in denied[-10:]]
    return {"total": len(denied), "by_kind": by_kind, "by_user": by_user, "recent": recent}
