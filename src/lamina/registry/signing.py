"""OpenSSF model signing (OMS) of artifact directories, and verification before every load.

A directory is signed in place: `<dir>/model.sig` is a Sigstore bundle whose DSSE payload lists
every file's sha256 (the signature file itself is excluded). The key pair is an ECDSA P-256 pair
kept outside the workspace (`workspace.secrets_dir()`), the private key encrypted with
`LAMINA_SIGNING_PASSWORD` when set. Only that public key verifies: a key pair dropped into the
workspace, or a signature made with any other key, does not count.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import sha256_bytes, sha256_file, write_bytes
from lamina.governance import at_rest

SIGNATURE = "model.sig"
# Left out of the signature: the signature itself, and an encrypted folder's wrapped folder key,
# which a master-key rotation rewrites (lamina.governance.at_rest says why that is safe).
UNSIGNED = (SIGNATURE, at_rest.FOLDER_KEY)
PRIVATE = "signing.key.pem"
PUBLIC = "signing.pub.pem"


def key_paths() -> tuple[Path, Path]:
    keys = workspace.secrets_dir()
    legacy = workspace.home() / "keys"
    for name in (PRIVATE, PUBLIC):  # workspaces made before keys moved out: moved once
        if (legacy / name).is_file() and not (keys / name).exists():
            (legacy / name).replace(keys / name)
    return keys / PRIVATE, keys / PUBLIC


def _password() -> bytes | None:
    value = os.environ.get("LAMINA_SIGNING_PASSWORD")
    return value.encode() if value else None


def init_keys(force: bool = False) -> dict:
    """Create the workspace's signing key pair; refuse to overwrite one unless `force`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = key_paths()
    if private.exists() and not force:
        raise LaminaError("a signing key already exists (use --force to replace it)", str(private))
    key = ec.generate_private_key(ec.SECP256R1())
    password = _password()
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_bytes(private, pem)
    os.chmod(private, 0o600)
    write_bytes(public, pub)
    return {"private": str(private), "public": str(public), "fingerprint": fingerprint()}


def ensure_keys() -> None:
    """Make the key pair on first need (a fresh workspace's first register), audited."""
    if not key_paths()[0].exists():
        from lamina.governance import audit

        info = init_keys()
        audit.record("keys.init", fingerprint=info["fingerprint"], replaced=False, bootstrap=True)


def fingerprint(public: Path | None = None) -> str:
    """sha256 of the public key PEM: names the signer in cards and tags."""
    public = public or key_paths()[1]
    if not public.exists():
        raise LaminaError("no signing key; run `lamina keys init`", str(public))
    return sha256_bytes(public.read_bytes())


def _hashing_config():
    from model_signing import hashing

    # Git paths are not ignored: an added .gitignore is an added file like any other.
    return hashing.Config().set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)


def sign_dir(path: str | os.PathLike) -> dict:
    """Sign every file below `path`; returns the signer's fingerprint and the file count."""
    from model_signing import signing

    path = Path(path)
    private, _ = key_paths()
    if not private.exists():
        raise LaminaError("no signing key; run `lamina keys init`", str(private))
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=private, password=_password())
    except (TypeError, ValueError) as e:
        raise LaminaError(
            f"cannot load the signing key ({e}); is LAMINA_SIGNING_PASSWORD right?", str(private)
        ) from None
    config.set_hashing_config(_hashing_config()).sign(path, path / SIGNATURE)
    return {"signer": fingerprint(), "files": len(signed_files(path))}


def signed_files(path: Path) -> dict[str, str]:
    """The {relative name: sha256} the signature's payload lists (read, not verified)."""
    bundle = json.loads((path / SIGNATURE).read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}


def _describe_mismatch(path: Path) -> str:
    expected = signed_files(path)
    actual = {
        p.relative_to(path).as_posix(): p
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.relative_to(path).as_posix() not in UNSIGNED
    }
    problems = [
        f"changed file {n}" for n in expected if n in actual and sha256_file(actual[n]) != expected[n]
    ]
    problems += [f"added file {n}" for n in actual if n not in expected]
    problems += [f"missing file {n}" for n in expected if n not in actual]
    return "; ".join(problems) or "contents differ from the signature"


def verify_dir(path: str | os.PathLike, public_key: str | os.PathLike | None = None) -> str:
    """Verify `path` against its signature before it is loaded; returns the signer fingerprint.

    Refuses (LaminaError) an unsigned directory, a signature from another key or an edited
    signature, and any changed, added or missing file — naming the file. A registered
    version that fails opens an incident (lamina.registry.incident_links.tampered).
    """
    try:
        return _verify_dir(path, public_key)
    except LaminaError as e:
        if "signature" in str(e) or "not signed" in str(e):
            from lamina.registry import incident_links

            incident_links.tampered(Path(path), str(e))
        raise


def _verify_dir(path: str | os.PathLike, public_key: str | os.PathLike | None = None) -> str:
    from model_signing import verifying

    path = Path(path)
    public = Path(public_key) if public_key else key_paths()[1]
    if not (path / SIGNATURE).is_file():
        raise LaminaError("not signed (no model.sig); refusing to load it", str(path))
    if not public.exists():
        raise LaminaError("no public key to verify with; run `lamina keys init`", str(public))
    config = verifying.Config().use_elliptic_key_verifier(public_key=public)
    try:
        config.set_hashing_config(_hashing_config()).verify(path, path / SIGNATURE)
    except ValueError as e:
        if str(e).startswith("Signature mismatch"):
            raise LaminaError(f"signature check failed: {_describe_mismatch(path)}", str(path)) from None
        raise LaminaError(f"signature check failed: {e}", str(path / SIGNATURE)) from None
    except Exception as e:  # cryptography's InvalidSignature carries no message
        raise LaminaError(
            f"signature is not valid for key {fingerprint(public)[:16]} ({type(e).__name__}): "
            "signed by another key, or the signature was edited",
            str(path / SIGNATURE),
        ) from None
    return fingerprint(public)


def check_before_load(path: str | os.PathLike) -> str | None:
    """What every loader calls first: a directory that is signed, or lies in the registry,
    must verify (a registered directory with its signature removed is refused, not trusted).
    A sub-directory of a registered version (its `model/`) verifies the whole version.
    Returns the signer fingerprint, or None for an unsigned directory outside the registry."""
    path = Path(path).resolve()
    if (path / SIGNATURE).is_file():
        return verify_dir(path)
    registry = (workspace.home() / "registry").resolve()
    if registry not in path.parents:
        return None
    for parent in path.parents:
        if parent == registry:
            break
        if (parent / SIGNATURE).is_file():
            return verify_dir(parent)
    return verify_dir(path)  # inside the registry and signed nowhere: refused as unsigned
