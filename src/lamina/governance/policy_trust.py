"""The policy's signature: who may do what is trusted only as an admin signed it.

`policy.yaml` carries a `signature` block: an admin's Ed25519 signature (their personal key,
lamina.governance.identity) over the canonical JSON of everything else in the file. Loading
the policy checks that the signer holds the `policy` permission in it, that the key is the one
enrolled for them, and that the signature matches — so a role escalated by hand, an unsigned
file, or one re-signed by a non-admin is refused, naming the file.

A policy could list a forger as admin and be signed by the forger's own key, so the admin
keys are also pinned outside the workspace (`<secrets_dir>/trusted-admins.json`, trust on
first use, as with SSH host keys): a signer whose key is not pinned is refused. Each policy
accepted re-pins the admin keys it lists, so a grant of admin by a pinned admin carries over.
"""

from __future__ import annotations

from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import canonical_json, read_json, write_json
from lamina.governance import identity
from lamina.recipe import PolicySignature, PolicySpec


def _message(policy: PolicySpec) -> bytes:
    return identity.POLICY + canonical_json(policy.model_dump(exclude={"signature"})).encode()


def admins(policy: PolicySpec) -> list[str]:
    return [u for u, roles in policy.users.items()
            if any({"*", "policy"} & set(policy.roles.get(r, [])) for r in roles)]


def admin_keys(policy: PolicySpec) -> set[str]:
    return {identity.key_id(k) for u in admins(policy) for k in policy.keys.get(u, [])[-1:]}


def pins_path() -> Path:
    return workspace.secrets_dir() / "trusted-admins.json"


def pinned() -> set[str] | None:
    path = pins_path()
    return set(read_json(path)["keys"]) if path.is_file() else None


def sign(policy: PolicySpec, signer: str, where: str) -> PolicySpec:
    """`policy` with `signer`'s signature: they must be an admin in it, with the enrolled key
    this config directory holds (proven here)."""
    if signer not in admins(policy):
        raise LaminaError(f"{signer!r} is not an admin in this policy and cannot sign it", where)
    identity.prove(signer, policy.keys, where)
    policy = policy.model_copy(update={"signature": None})
    sig = identity.sign(signer, _message(policy))
    return policy.model_copy(update={"signature": PolicySignature(signer=signer, key=sig["key"], sig=sig["sig"])})


def check(policy: PolicySpec, where: str) -> str:
    """The signer of a loaded policy, or a refusal naming the file; pins its admin keys."""
    s = policy.signature
    fix = "an admin reviews it and re-signs it with `lamina policy sign`"
    if s is None:
        raise LaminaError(f"the policy is not signed; {fix}", where)
    if s.signer not in admins(policy):
        raise LaminaError(f"signed by {s.signer!r}, who is not an admin in it; {fix}", where)
    public = identity.enrolled(s.signer, policy.keys).get(s.key)
    if public is None:
        raise LaminaError(f"signed with key {s.key}, which is not enrolled for {s.signer!r}; {fix}", where)
    if not identity.verify(public, _message(policy.model_copy(update={"signature": None})), s.sig):
        raise LaminaError(
            f"changed after {s.signer!r} signed it (a role, user or key edited by hand?); {fix}", where
        )
    trusted = pinned()
    if trusted is not None and s.key not in trusted:
        raise LaminaError(
            f"signed by {s.signer!r} with key {s.key}, which this machine never trusted as an admin key "
            f"(pinned in {pins_path()}); a policy replaced by someone else's? {fix}",
            where,
        )
    now = admin_keys(policy)
    if trusted != now:
        write_json(pins_path(), {"keys": sorted(now)})
    return s.signer
