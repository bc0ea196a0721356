"""Personal signing keys: who a person is, proven by a key only they hold.

Each person has an Ed25519 key pair. The private half lives in their own config directory,
outside every workspace (`<config>/identities/<user>.pem`, mode 0600); the public half is
enrolled in the workspace's signed policy by an admin (`policy.keys`). Setting LAMINA_USER
names an identity; holding that identity's private key proves it. Actions that release or
change authority (promote, rollback, register, grants, key changes) need the proof, and the
audit entry they write carries the signature.

A person makes their own key (`lamina keys user-init`), which also leaves a request with the
public key in the workspace; an admin enrolls it (`lamina policy grant` / `enroll`), so the
admin never holds anyone else's private key.
"""

from __future__ import annotations

import base64
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json, sha256_bytes, write_bytes, write_json

_NAME = re.compile(r"^[\w.@-]{1,100}$")
# Domain separation: a signature made for one kind of statement never verifies as another.
AUDIT, POLICY, REQUEST = b"lamina-audit-entry\n", b"lamina-policy\n", b"lamina-key-request\n"


def check_name(user: str) -> str:
    if not _NAME.match(user or ""):
        raise LaminaError("an identity is letters, digits, '.', '_', '@' or '-'", f"identity {user!r}")
    return user


def key_path(user: str) -> Path:
    """Where `user`'s private key lives: the per-user config directory, never the workspace."""
    return workspace.config_dir() / "identities" / f"{check_name(user)}.pem"


def requests_dir() -> Path:
    return workspace.home() / "governance" / "requests"


def key_id(public_b64: str) -> str:
    """A short, stable name of a public key (sha256 of its raw bytes)."""
    return sha256_bytes(base64.b64decode(public_b64))[:16]


def _load_private(user: str):
    from cryptography.hazmat.primitives import serialization

    path = key_path(user)
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise LaminaError(f"not a usable personal key ({e})", str(path)) from None


def _public_b64(private) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def own_public(user: str) -> str | None:
    """The public half of the key this config directory holds for `user`, if any."""
    private = _load_private(user)
    return _public_b64(private) if private is not None else None


def create_key(user: str, force: bool = False) -> dict:
    """Make `user`'s key pair in this config directory and leave an enrollment request (the
    public key, signed by the new key) in the workspace. Returns {user, key_id, private, request}."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = key_path(user)
    if path.exists() and not force:
        raise LaminaError("a personal key already exists (use --force to make a new one)", str(path))
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_bytes(path, pem)
    os.chmod(path, 0o600)
    public = _public_b64(private)
    request = write_request(user)
    return {"user": user, "key_id": key_id(public), "private": str(path), "request": str(request),
            "public": public}


def write_request(user: str) -> Path:
    """Leave `user`'s public key in the workspace for an admin to enroll (signed by the key
    itself, so a request cannot name a key its writer does not hold)."""
    private = _load_private(user)
    if private is None:
        raise LaminaError(f"no personal key for {user!r}; run `lamina keys user-init`", str(key_path(user)))
    public = _public_b64(private)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = f"{user}\n{public}\n{stamp}".encode()
    path = requests_dir() / f"{user}.json"
    write_json(path, {"user": user, "public": public, "key_id": key_id(public), "created": stamp,
                      "sig": base64.b64encode(private.sign(REQUEST + body)).decode()})
    return path


def pending_request(user: str) -> dict | None:
    """`user`'s enrollment request, checked (its self-signature), or None when there is none."""
    path = requests_dir() / f"{check_name(user)}.json"
    if not path.is_file():
        return None
    try:
        req = read_json(path)
        body = f"{req['user']}\n{req['public']}\n{req['created']}".encode()
        ok = req["user"] == user and verify(req["public"], REQUEST + body, req["sig"])
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise LaminaError("not a valid key request (edited, or not signed by the key it names)", str(path))
    return req


def sign(user: str, message: bytes) -> dict | None:
    """{key, sig} of `message` under `user`'s key, or None when this config holds no key for them."""
    if not _NAME.match(user or ""):
        return None  # a name no key can carry: the entry stays a claim
    private = _load_private(user)
    if private is None:
        return None
    return {"key": key_id(_public_b64(private)), "sig": base64.b64encode(private.sign(message)).decode()}


def verify(public_b64: str, message: bytes, sig_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(base64.b64decode(sig_b64), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def enrolled(user: str, keys: dict[str, list[str]]) -> dict[str, str]:
    """{key id: public key} of every key ever enrolled for `user` (the last is current)."""
    return {key_id(k): k for k in keys.get(user, [])}


def prove(user: str, keys: dict[str, list[str]], where: str) -> str:
    """Refuse unless this config directory holds the private key currently enrolled for
    `user`; returns its key id. Naming an identity (LAMINA_USER) is not proving it."""
    current = keys.get(user, [])
    mine = own_public(user)
    if mine is None:
        raise LaminaError(
            f"cannot prove you are {user!r}: no personal key for {user!r} at {key_path(user)} "
            f"(LAMINA_USER names an identity, the key proves it); {user} runs `lamina keys user-init` "
            f"and an admin enrolls it with `lamina policy enroll {user}`",
            "LAMINA_USER",
        )
    if not current:
        raise LaminaError(
            f"{user!r} has no key enrolled in the policy; an admin enrolls it with `lamina policy enroll {user}`",
            where,
        )
    if mine != current[-1]:
        raise LaminaError(
            f"the personal key at {key_path(user)} (key {key_id(mine)}) is not the one enrolled for "
            f"{user!r} (key {key_id(current[-1])}); ask an admin to enroll your new key",
            where,
        )
    return key_id(mine)
