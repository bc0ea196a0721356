"""Roles and permissions: who may do what in this workspace.

The policy is `<workspace>/policy.yaml` (shape: `lamina.recipe.PolicySpec`). A fresh workspace
has none; the first mutating action (or `lamina init`) writes one that makes the acting
identity its admin — the person who created the workspace owns it, as with a git repo.
Every mutating command calls `require(permission)`; refusals are audited too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import create_text, write_text
from lamina.governance import audit
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
    """The workspace policy; a malformed file is an error naming the key, never a silent default."""
    path = path or policy_path()
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

    journal.settle("policy", {"policy.grant": _granted, "policy.init": _initialised})


def init_policy(admin: str | None = None) -> Path:
    """Write the default policy with `admin` (default: the acting identity) as its admin:
    the file and its audit entry as one step, even across a kill (lamina.governance.journal).
    Created only if absent, so two first commands at once make one policy; no lock, so a
    new workspace holds nothing but the policy and the audit log afterwards."""
    from lamina.governance import journal

    path = policy_path()
    if path.exists():
        raise LaminaError("a policy already exists; edit it instead", str(path))
    admin = admin or workspace.user()
    policy = yaml.safe_dump(PolicySpec(users={admin: ["admin"]}).model_dump(), sort_keys=False)
    with journal.operation("policy", "policy.init", admin, _initialised, admin=admin) as op:
        if not create_text(path, _made_by(op.op_id) + policy):
            raise LaminaError("a policy already exists; edit it instead", str(path))
        op.result["admin"] = admin
    for empty in (op.path.parent, op.path.parent.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()  # only when empty: a lock or another intent keeps it
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
        audit.record("denied", user=user, permission=permission)
        raise LaminaError(
            f"user {user!r} (roles: {roles}) lacks permission {permission!r}", str(policy_path())
        )
    return user


def _granted(intent) -> dict | None:
    """Whether a grant a kill interrupted reached the policy file."""
    d = intent.details
    return {} if d["role"] in load_policy().users.get(d["grantee"], []) else None


def grant(user: str, role: str) -> None:
    """Give `user` a role (needs the `policy` permission); the policy file is rewritten
    atomically and the grant audited once, even across a kill (lamina.governance.journal)."""
    from lamina.governance import journal

    actor = require("policy")
    with journal.locked("policy"):
        _settle_policy()
        policy = load_policy()
        if role not in policy.roles:
            raise LaminaError(f"unknown role {role!r}; roles are {', '.join(policy.roles)}", str(policy_path()))
        roles = policy.users.get(user, [])
        if role in roles:
            return
        policy.users = {**policy.users, user: [*roles, role]}
        with journal.operation("policy", "policy.grant", actor, _granted, grantee=user, role=role) as op:
            write_text(policy_path(), yaml.safe_dump(policy.model_dump(), sort_keys=False))
            op.result["role"] = role
