"""Key changes as audited operations: a new signing key pair, a master-key rotation.

Each runs under the `keys` lock with an intent (lamina.governance.journal); the next key
command settles one a kill left, by looking at the keys themselves: a signing key whose
fingerprint differs from the one before, a master key whose id differs from the old one.
"""

from __future__ import annotations

from lamina.errors import LaminaError
from lamina.governance import journal

DOMAIN = "keys"


def _fingerprint() -> str | None:
    from lamina.registry import signing

    try:
        return signing.fingerprint()
    except LaminaError:
        return None


def _master_id() -> str | None:
    from lamina.governance import crypto

    try:
        return crypto.load_master_key(create=False).key_id
    except LaminaError:
        return None


def _new_signing_key(intent: journal.Intent) -> dict | None:
    now = _fingerprint()
    return {"fingerprint": now} if now and now != intent.details["old"] else None


def _rotated(intent: journal.Intent) -> dict | None:
    now = _master_id()
    return {"new": now} if now and now != intent.details["old"] else None


PROBES: dict[str, journal.Probe] = {"keys.init": _new_signing_key, "keys.rotate": _rotated}


def init_signing_keys(user: str, force: bool = False) -> dict:
    """Make the workspace's signing key pair (replace it with `force`), audited once."""
    from lamina.registry import signing

    with journal.locked(DOMAIN):
        journal.settle(DOMAIN, PROBES)
        with journal.operation(DOMAIN, "keys.init", user, _new_signing_key, old=_fingerprint(),
                               replaced=force) as op:
            info = signing.init_keys(force=force)
            op.result["fingerprint"] = info["fingerprint"]
    return info


def rotate_master_key(user: str, new_key_file: str | None = None):
    """Rotate the data-encryption master key (lamina.governance.crypto), audited once."""
    from lamina.governance import crypto

    with journal.locked(DOMAIN):
        journal.settle(DOMAIN, PROBES)
        with journal.operation(DOMAIN, "keys.rotate", user, _rotated, old=_master_id()) as op:
            rot = crypto.rotate_master_key(new_key_file)
            op.result.update(new=rot.new_key_id, files=len(rot.rewrapped))
    return rot
