"""Roles and permissions: who may do what in this workspace.

The policy is `<workspace>/policy.yaml` (shape: `lamina.recipe.PolicySpec`). A fresh workspace
has none; the first mutating action (or `lamina init`) writes one that makes the acting
identity its admin — the person who created the workspace owns it, as with a git repo.
Every mutating command calls `require(permission)`; refusals are audited too.

The policy is signed by an admin's personal key and checked on every load
(lamina.governance.policy_trust); permissions in PROVEN also need the actor to prove their
identity with their own key (lamina.governance.identity), not just name it in LAMINA_USER.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import create_text, sha256_bytes, write_text
from lamina.governance import audit, identity, policy_trust
from lamina.recipe import PolicySpec

# Every permission a command may ask for; a policy naming anything else is a typo.
PERMISSIONS = (
    "read",
    "data.write",
    "data.forget",
    "train",
    "register",
    "promote.staging",
    "promote.production",
    "rollback",
    "serve",
    "call",
    "incident",
    "keys",
    "policy",
    "*",
)

# Acts that release a model or change who may do what: the actor proves who they are with
# their personal key, and the audit entry carries their signature.
PROVEN = ("register", "promote.", "rollback", "keys", "policy")


def needs_proof(permission: str) -> bool:
    return any(permission == p or (p.endswith(".") and permission.startswith(p)) for p in PROVEN)


def policy_path() -> Path:
    return workspace.home() / "policy.yaml"


def _validate(policy: PolicySpec, source: str) -> PolicySpec:
    for role, perms in policy.roles.items():
        for i, perm in enumerate(perms):
            if perm not in PERMISSIONS and not perm.startswith("promote."):
                raise LaminaError(f"unknown permission {perm!r}", f"{source}: roles.{role}.{i}")
    for name, roles in policy.users.items():
        for i, role in enumerate(roles):
            if role not in policy.roles:
                raise LaminaError(f"unknown role {role!r}", f"{source}: users.{name}.{i}")
    return policy


def load_policy(path: Path | None = None) -> PolicySpec:
    """The workspace policy; a malformed file is an error naming the key, never a silent
    default; an unsigned or tampered one is refused (and the refusal audited)."""
    path = path or policy_path()
    policy = _parse(path)
    try:
        policy_trust.check(policy, str(path))
    except LaminaError as e:
        refused("signature", str(e), check="policy")
        raise
    return policy


def read_policy(path: Path | None = None) -> PolicySpec:
    """`load_policy` for checks that must not write (the refusal is theirs to report)."""
    path = path or policy_path()
    policy = _parse(path)
    policy_trust.check(policy, str(path))
    return policy


def _parse(path: Path) -> PolicySpec:
    if not path.exists():
        raise LaminaError("no policy file; run `lamina init`", str(path))
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise LaminaError(f"not UTF-8 text (byte {e.start})", str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise LaminaError(f"not valid YAML: {e}", f"{path}:{mark.line + 1}" if mark else str(path)) from None
    if not isinstance(data, dict):
        raise LaminaError("a policy must be a YAML mapping", str(path))
    try:
        policy = PolicySpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(policy)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise LaminaError(msg, f"{path}: {key}") from None
    return _validate(policy, str(path))


def _made_by(op_id: str) -> str:
    return f"# written by `lamina init` (operation {op_id})\n"


def _initialised(intent) -> dict | None:
    """Whether a `policy.init` a kill interrupted wrote the policy file: its first line names
    the operation (a comment, which YAML ignores)."""
    with contextlib.suppress(OSError):
        with open(policy_path(), encoding="utf-8") as f:
            if f.readline() == _made_by(intent.op_id):
                return {}
    return None


def _settle_policy() -> None:
    """Write the entry a kill left missing (or drop the intent); with the policy lock held."""
    from lamina.governance import journal

    journal.settle("policy", {"policy.grant": _granted, "policy.init": _initialised, "policy.enroll": _enrolled,
                               "policy.revoke": _revoked, "policy.role": _role_added,
                               "policy.encrypt_at_rest": _encryption_set, "policy.sign": _signed})


def save_policy(policy: PolicySpec, signer: str | None = None) -> None:
    """Write the policy signed by `signer` (default: the acting identity, who must be an
    admin in it and hold their enrolled key)."""
    path = policy_path()
    signed = policy_trust.sign(policy, signer or workspace.user(), str(path))
    write_text(path, yaml.safe_dump(signed.model_dump(), sort_keys=False))


def refused(kind: str, message: str, user: str | None = None, **details) -> None:
    """Audit a refusal (`denied`): role, four-eyes, gate or signature; `lamina audit refusals`
    counts them. The entry is signed when the actor holds a key, so a claimed name shows."""
    audit.record("denied", user=user or workspace.user(), kind=kind, message=message[:500], **details)


def init_policy(admin: str | None = None) -> Path:
    """Write the default policy with `admin` (default: the acting identity) as its admin:
    the file and its audit entry as one step, even across a kill (lamina.governance.journal).
    Created only if absent, so two first commands at once make one policy; no lock, so a
    new workspace holds nothing but the policy and the audit log afterwards."""
    from lamina.governance import journal

    path = policy_path()
    if path.exists():
        raise LaminaError("a policy already exists; edit it instead", str(path))
    if policy_trust.pinned() is not None:  # not a new workspace: its signed policy went missing
        raise LaminaError(
            f"the policy is missing, but this workspace had one signed by the admin keys pinned in "
            f"{policy_trust.pins_path()}; restore policy.yaml from a backup (or remove that file to start over)",
            str(path),
        )
    admin = identity.check_name(admin or workspace.user())
    public = identity.own_public(admin) or identity.create_key(admin)["public"]
    _drop_request(admin)  # enrolled right here
    signed = policy_trust.sign(PolicySpec(users={admin: ["admin"]}, keys={admin: [public]}), admin, str(path))
    policy = yaml.safe_dump(signed.model_dump(), sort_keys=False)
    with journal.operation("policy", "policy.init", admin, _initialised, admin=admin) as op:
        if not create_text(path, _made_by(op.op_id) + policy):
            raise LaminaError("a policy already exists; edit it instead", str(path))
        op.result.update(admin=admin, key=identity.key_id(public))
    for empty in (op.path.parent, op.path.parent.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()  # only when empty: a lock or another intent keeps it
    load_policy()  # pins this admin's key outside the workspace: the root of trust here
    return path


def ensure_policy() -> PolicySpec:
    from lamina.governance import journal

    if not policy_path().exists():
        init_policy()
    elif journal.pending("policy"):  # a policy change a kill interrupted: its entry first
        with journal.locked("policy"):
            _settle_policy()
    return load_policy()


def permissions_of(user: str, policy: PolicySpec) -> set[str]:
    perms: set[str] = set()
    for role in policy.users.get(user, []):
        perms.update(policy.roles.get(role, []))
    return perms


def allowed(user: str, permission: str, policy: PolicySpec) -> bool:
    perms = permissions_of(user, policy)
    return "*" in perms or permission in perms


def acting_user() -> str:
    """`LAMINA_USER` (or the OS user) — which, against a tracking server, must be the person
    whose MLflow credentials are in use: the server authenticates them, nobody checks a name."""
    user = workspace.user()
    server_user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    uri = os.environ.get("LAMINA_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if server_user and uri.startswith(("http://", "https://")) and server_user != user:
        raise LaminaError(
            f"acting as {user!r} but the MLflow credentials are {server_user!r}; with a tracking server "
            "they must be the same person",
            "LAMINA_USER",
        )
    return user


def require(permission: str, user: str | None = None) -> str:
    """Return the acting identity if it holds `permission`; otherwise refuse, naming it."""
    user = user or acting_user()
    policy = ensure_policy()
    if not allowed(user, permission, policy):
        roles = ", ".join(policy.users.get(user, [])) or "none"
        audit.record("denied", user=user, permission=permission, kind="role")
        raise LaminaError(
            f"user {user!r} (roles: {roles}) lacks permission {permission!r}", str(policy_path())
        )
    if needs_proof(permission):
        try:
            identity.prove(user, policy.keys, str(policy_path()))
        except LaminaError as e:
            refused("identity", str(e), user=user, permission=permission)
            raise
    return user


def _granted(intent) -> dict | None:
    """Whether a grant a kill interrupted reached the policy file."""
    d = intent.details
    return {} if d["role"] in load_policy().users.get(d["grantee"], []) else None


def _take_request(user: str, policy: PolicySpec) -> str | None:
    """`user`'s pending key request, if it names a key not yet current: its public key."""
    req = identity.pending_request(user)
    if req is None or policy.keys.get(user, [])[-1:] == [req["public"]]:
        return None
    return req["public"]


def _write(policy: PolicySpec, actor: str) -> None:
    save_policy(policy, signer=actor)


def grant(user: str, role: str, expect: str | None = None) -> dict:
    """Give `user` a role (needs the `policy` permission), enrolling the key `user` made
    with `lamina keys user-init` if one waits; the policy is re-signed by the acting admin,
    rewritten atomically and the grant audited once, even across a kill (lamina.governance.journal).
    `expect`: the key id the grantee told you; a waiting request with another key is refused.
    Returns {roles, key} (key: the id of the key enrolled now, or None)."""
    from lamina.governance import journal

    identity.check_name(user)
    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        if role not in policy.roles:
            raise LaminaError(f"unknown role {role!r}; roles are {', '.join(policy.roles)}", str(policy_path()))
        roles = policy.users.get(user, [])
        public = _take_request(user, policy)
        if expect and (public is None or identity.key_id(public) != expect):
            found = identity.key_id(public) if public else "none"
            raise LaminaError(f"{user}'s waiting key request holds key {found}, not {expect}; nothing granted",
                              f"--key-id {expect}")
        if role in roles and public is None:
            return {"roles": roles, "key": None}
        policy.users = {**policy.users, user: roles if role in roles else [*roles, role]}
        key = identity.key_id(public) if public else None
        if public:
            policy.keys = {**policy.keys, user: [*policy.keys.get(user, []), public]}
        with journal.operation("policy", "policy.grant", actor, _granted, grantee=user, role=role) as op:
            _write(policy, actor)
            op.result.update(role=role, key=key)
        _drop_request(user)
        return {"roles": policy.users[user], "key": key}


def _drop_request(user: str) -> None:
    (identity.requests_dir() / f"{user}.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only when empty: other requests may wait
        identity.requests_dir().rmdir()
        identity.requests_dir().parent.rmdir()


def _enrolled(intent) -> dict | None:
    d = intent.details
    return {} if d["key_id"] in identity.enrolled(d["grantee"], load_policy().keys) else None


def enroll(user: str, expect: str | None = None) -> str:
    """Enroll the key `user` left with `lamina keys user-init` (a new person's, or a rotated
    one); `expect`: the key id they told you, checked against the request. Returns the key id."""
    from lamina.governance import journal

    identity.check_name(user)
    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        public = _take_request(user, policy)
        if public is None:
            raise LaminaError(f"no new key request from {user!r}; they run `lamina keys user-init` first",
                              str(identity.requests_dir()))
        key = identity.key_id(public)
        if expect and expect != key:
            raise LaminaError(f"the request holds key {key}, not {expect}; do not enroll it", f"--key-id {expect}")
        policy.keys = {**policy.keys, user: [*policy.keys.get(user, []), public]}
        with journal.operation("policy", "policy.enroll", actor, _enrolled, grantee=user, key_id=key):
            _write(policy, actor)
        _drop_request(user)
        return key


def _revoked(intent) -> dict | None:
    d = intent.details
    return {} if d["role"] not in load_policy().users.get(d["grantee"], []) else None


def revoke(user: str, role: str) -> list[str]:
    """Take a role from `user` (policy re-signed, audited once); returns the roles left."""
    from lamina.governance import journal

    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        roles = policy.users.get(user, [])
        if role not in roles:
            raise LaminaError(f"{user!r} does not hold role {role!r}", str(policy_path()))
        left = [r for r in roles if r != role]
        policy.users = {k: v for k, v in {**policy.users, user: left}.items() if v}
        if not policy_trust.admin_keys(policy):
            raise LaminaError("this would leave the policy without an admin who holds a key", str(policy_path()))
        with journal.operation("policy", "policy.revoke", actor, _revoked, grantee=user, role=role):
            _write(policy, actor)
        return left


def _role_added(intent) -> dict | None:
    return {} if intent.details["role"] in load_policy().roles else None


def add_role(role: str, permissions: list[str]) -> None:
    """Add a role to the policy (re-signed by the acting admin, audited once even across a kill);
    nothing happens when it exists."""
    from lamina.governance import journal

    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        if role in policy.roles:
            return
        policy.roles = {**policy.roles, role: list(permissions)}
        with journal.operation("policy", "policy.role", actor, _role_added, role=role, permissions=list(permissions)):
            _write(policy, actor)


def _encryption_set(intent) -> dict | None:
    return {} if load_policy().security.encrypt_at_rest == intent.details["on"] else None


def set_encrypt_at_rest(on: bool) -> bool:
    """Switch `security.encrypt_at_rest` (policy re-signed, audited once even across a kill);
    returns the previous value. Setting the value it has changes nothing and writes no entry."""
    from lamina.governance import journal

    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        before = policy.security.encrypt_at_rest
        if before != on:
            policy.security = policy.security.model_copy(update={"encrypt_at_rest": on})
            with journal.operation("policy", "policy.encrypt_at_rest", actor, _encryption_set, on=on):
                _write(policy, actor)
        return before


def _signed(intent) -> dict | None:
    """Whether a `policy sign` a kill interrupted wrote its file: the policy's bytes are the
    ones it signed."""
    with contextlib.suppress(OSError):
        if sha256_bytes(policy_path().read_bytes()) == intent.details["sha256"]:
            return {}
    return None


def sign_policy() -> str:
    """Re-sign a policy an admin edited by hand (after reviewing it): the acting identity
    must be an admin in the edited file, hold its enrolled key, and that key must be one this
    machine already trusts. Audited once, even across a kill. Returns the signer."""
    from lamina.governance import journal

    actor = acting_user()
    path = policy_path()
    with journal.locked("policy"):
        try:
            read_policy(path)
        except LaminaError:
            pass
        else:  # signed and unchanged: nothing to do but record what a killed sign left
            _settle_policy()
            return actor
        journal.settle("policy", {"policy.sign": _signed})  # a killed sign first (the others need a valid policy)
        policy = _parse(path)
        trusted = policy_trust.pinned()
        adopted = _adopt_legacy(policy, actor, trusted)
        signed = policy_trust.sign(policy, actor, str(path))
        if trusted is not None and signed.signature.key not in trusted:
            refused("signature", f"{actor} tried to sign the policy with an untrusted key", user=actor)
            raise LaminaError(f"{actor!r}'s key {signed.signature.key} is not a trusted admin key here",
                              str(policy_trust.pins_path()))
        text = yaml.safe_dump(signed.model_dump(), sort_keys=False)
        with journal.operation("policy", "policy.sign", actor, _signed, adopted=adopted,
                               sha256=sha256_bytes(text.encode())) as op:
            write_text(path, text)
            op.result["key"] = signed.signature.key
        _settle_policy()  # what a kill left before the edit can be judged now that the policy verifies
    return actor


def _adopt_legacy(policy: PolicySpec, actor: str, trusted: set[str] | None) -> bool:
    """A policy from before signatures (unsigned, no keys, nothing pinned here): its admin
    enrolls their own key while signing it the first time. Anything else needs an admin's key."""
    if policy.signature is not None or trusted is not None or policy.keys.get(actor):
        return False
    public = identity.own_public(actor)
    if public is None or actor not in policy_trust.admins(policy):
        return False
    policy.keys = {**policy.keys, actor: [public]}
    _drop_request(actor)
    return True
