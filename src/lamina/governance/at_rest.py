"""Encryption at rest for dataset versions and registered weights (`security.encrypt_at_rest`).

Raw source snapshots are always encrypted (lamina.governance.crypto). With the workspace
policy's `security.encrypt_at_rest: true`, two more kinds of file are stored encrypted:

- a dataset version's record files, as `train.jsonl.enc` and `eval.jsonl.enc` (crypto's format,
  each file's data key wrapped by the master key). The version is still named by the sha256 of
  its plaintext records, so switching encryption on renames nothing, and the re-hash before
  training reads through the decryption.
- the weights (`*.safetensors`) of a registered folder (a registry version, a stored base), as
  `X.safetensors.sealed`: the same chunked format, but each file's data key is wrapped by a key
  of the folder's own, kept in `folder.key.enc` (wrapped by the master key); `sealed.json` lists
  each sealed file's plaintext sha256.

Why a folder key: a registered folder is signed (OMS) over its bytes as stored, i.e. ciphertext,
so `lamina verify` (and anyone holding only the public key) checks it without the master key,
and a flipped ciphertext byte fails the signature before anything is decrypted. Rotating the
master key re-wraps `folder.key.enc` alone, the one file the signature leaves out, so the signed
bytes never change. Replacing that file gains nothing: another key cannot open the sealed files.

Loaders read through `plain_view(dir)`: a plaintext directory is used as it is; for a sealed one
a private (0700) temporary directory, on /dev/shm (memory) where it has room, holds the
decrypted files (each checked against `sealed.json`) and links to the rest, and is removed as
soon as the load is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import read_json, sha256_file, write_json
from lamina.governance import access, crypto
from lamina.recipe import SecuritySpec

ENC = ".enc"  # wrapped by the master key (found and re-wrapped by `lamina keys rotate`)
SEALED = ".sealed"  # wrapped by the folder key
FOLDER_KEY = "folder.key.enc"
MANIFEST = "sealed.json"
SHM = Path("/dev/shm")


def settings() -> SecuritySpec:
    """The policy's `security` section (its defaults when the workspace has no policy yet)."""
    if not access.policy_path().exists():
        return SecuritySpec()
    return access.load_policy().security


def enabled() -> bool:
    return settings().encrypt_at_rest


def set_enabled(on: bool) -> bool:
    """Switch `security.encrypt_at_rest` in the policy (needs the `policy` permission), audited.
    Returns the previous value. What is already stored stays as it is; readers take both."""
    return access.set_encrypt_at_rest(on)


def _ring(where: str) -> dict[str, bytes]:
    """The master key ring for reading; a missing key is named, never made anew."""
    try:
        crypto.load_master_key(create=False)
    except LaminaError as e:
        raise LaminaError(
            f"stored encrypted, and the master key is missing ({e}); restore the key file from its "
            "backup or set LAMINA_MASTER_KEY",
            where,
        ) from None
    return crypto.keyring()


# --- single files (dataset versions' records) -------------------------------------------


def seal_file(path: Path) -> Path:
    """Encrypt `path` to `path.enc` (atomically) and remove the plaintext; returns the new path."""
    target = path.with_name(path.name + ENC)
    with crypto.open_encrypted_writer(target) as w, open(path, "rb") as f:
        while block := f.read(crypto.CHUNK):
            w.write(block)
    path.unlink()
    return target


def locate(path: Path) -> Path | None:
    """Where the file `path` is stored: itself, its `.enc` or `.sealed` form, or None."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ENC), path.with_name(path.name + SEALED)):
        if candidate.is_file():
            return candidate
    return None


def iter_bytes(path: Path) -> Iterator[bytes]:
    """Plaintext blocks of the file `path`, however it is stored (see `locate`)."""
    stored = locate(path)
    if stored is None:
        raise LaminaError("no such file", str(path))
    if stored.name.endswith(ENC):
        yield from crypto.iter_decrypt(stored, _ring(str(stored)))
    elif stored.name.endswith(SEALED):
        yield from _iter_sealed(stored)
    else:
        with open(stored, "rb") as f:
            while block := f.read(crypto.CHUNK):  # small blocks: intake's memory must not grow with a file
                yield block


def iter_lines(path: Path) -> Iterator[bytes]:
    """Plaintext lines (with their newline) of the text file `path`, however it is stored."""
    rest = b""
    for block in iter_bytes(path):
        rest += block
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


# --- sealed folders (registered weights) ------------------------------------------------


def seal_folder(root: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    """Encrypt every `pattern` file below `root` in place (X -> X.sealed) under a new folder
    key; write `folder.key.enc` and `sealed.json`. Returns {relative name: plaintext sha256}.
    Call before the folder is signed, so the signature covers the ciphertext."""
    root = Path(root)
    files = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not files:
        return {}
    folder = crypto.MasterKey(secrets.token_bytes(32), "folder")
    crypto.encrypt_bytes(root / FOLDER_KEY, folder.key)
    digests = {}
    for p in files:
        h = hashlib.sha256()
        with crypto.open_encrypted_writer(p.with_name(p.name + SEALED), folder) as w, open(p, "rb") as f:
            while block := f.read(crypto.CHUNK):
                h.update(block)
                w.write(block)
        digests[p.relative_to(root).as_posix()] = h.hexdigest()
        p.unlink()
    write_json(root / MANIFEST, {"files": digests})
    return digests


def sealed_root(path: Path) -> Path | None:
    """The sealed folder `path` lies in (itself or a parent holding sealed.json), if any."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if (candidate / MANIFEST).is_file() and (candidate / FOLDER_KEY).is_file():
            return candidate
    return None


def _manifest(root: Path) -> dict[str, str]:
    try:
        files = read_json(root / MANIFEST)["files"]
    except (ValueError, KeyError, TypeError):
        raise LaminaError("damaged: not a list of sealed files", str(root / MANIFEST)) from None
    return files


def _folder_key(root: Path) -> crypto.MasterKey:
    where = str(root / FOLDER_KEY)
    key = crypto.decrypt_bytes(root / FOLDER_KEY, _ring(where))
    if len(key) != 32:
        raise LaminaError("damaged: not a 32-byte key", where)
    return crypto.MasterKey(key, "folder")


def _iter_sealed(path: Path, key: crypto.MasterKey | None = None) -> Iterator[bytes]:
    if key is None:
        root = sealed_root(path.parent)
        if root is None:
            raise LaminaError(f"sealed, but no {FOLDER_KEY} and {MANIFEST} above it", str(path))
        key = _folder_key(root)
    wrapped_by = key.key_id  # a damaged header is left for crypto to name
    with open(path, "rb") as f, contextlib.suppress(ValueError, AttributeError):
        if f.read(len(crypto.MAGIC)) == crypto.MAGIC:
            wrapped_by = json.loads(f.readline(4096)).get("key_id")
    if wrapped_by != key.key_id:
        raise LaminaError(f"not wrapped by this folder's key (was its {FOLDER_KEY} replaced?)", str(path))
    yield from crypto.iter_decrypt(path, {key.key_id: key.key})


def plain_sha256(path: Path) -> str | None:
    """sha256 of the plaintext of the file `path`: hashed when stored plain, read from the
    folder's sealed.json when sealed (the signature vouches for it; every decryption is checked
    against it). None when absent."""
    stored = locate(path)
    if stored is None:
        return None
    if not stored.name.endswith(SEALED):
        return sha256_file(stored)
    root = sealed_root(stored.parent)
    name = stored.relative_to(root).as_posix()[: -len(SEALED)] if root else None
    digest = _manifest(root).get(name) if root else None
    if digest is None:
        raise LaminaError(f"sealed, but not listed in {MANIFEST}", str(stored))
    return digest


def plain_name(path: Path) -> str:
    """A stored file's plaintext name (`X.safetensors.sealed` -> `X.safetensors`)."""
    name = Path(path).name
    return name[: -len(SEALED)] if name.endswith(SEALED) else name


def plain_listing(root: Path, listed: dict[str, str]) -> dict[str, str]:
    """A signature's {name: sha256} listing of `root` with each sealed file named and hashed as
    its plaintext (so digests match those taken of the run before it was registered)."""
    sealed = {k for k in listed if k.endswith(SEALED)}
    if not sealed:
        return listed
    plain = _manifest(Path(root))
    out = {k: v for k, v in listed.items() if k not in sealed and k != MANIFEST}
    for k in sealed:
        out[k[: -len(SEALED)]] = plain[k[: -len(SEALED)]]
    return out


def _plain_parent(need: int) -> str | None:
    configured = settings().plain_dir
    if configured:
        return configured
    with contextlib.suppress(OSError):
        if SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free > need + (256 << 20):
            return str(SHM)
    return None  # the system's temp dir


@contextlib.contextmanager
def private_dir(need: int = 0) -> Iterator[Path]:
    """A new directory only its owner can enter, removed (with what it holds) on exit."""
    path = Path(tempfile.mkdtemp(prefix="lamina-plain-", dir=_plain_parent(need)))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _decrypt_to(src: Path, dst: Path, key: crypto.MasterKey, want: str | None) -> None:
    h = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for block in _iter_sealed(src, key):
            h.update(block)
            out.write(block)
    if want is None or h.hexdigest() != want:
        raise LaminaError(f"decrypts to sha256 {h.hexdigest()[:16]}, not the {MANIFEST} entry", str(src))


@contextlib.contextmanager
def plain_view(directory: str | os.PathLike) -> Iterator[Path]:
    """`directory` as a loader can read it: itself when nothing in it is sealed; else a private
    temporary copy with the sealed files decrypted and links to the others (signature and
    key files left out), removed when the `with` ends."""
    directory = Path(directory)
    sealed = sorted(p for p in directory.rglob(f"*{SEALED}") if p.is_file()) if directory.is_dir() else []
    if not sealed:
        yield directory
        return
    root = sealed_root(directory)
    if root is None:
        raise LaminaError(f"holds sealed files but no {FOLDER_KEY} and {MANIFEST}", str(directory))
    manifest, key = _manifest(root), _folder_key(root)
    with private_dir(sum(p.stat().st_size for p in sealed)) as view:
        for p in sorted(directory.rglob("*")):
            rel = p.relative_to(directory)
            if p.is_dir():
                (view / rel).mkdir(mode=0o700, exist_ok=True)
            elif p.name.endswith(SEALED):
                name = p.resolve().relative_to(root).as_posix()[: -len(SEALED)]
                _decrypt_to(p, view / rel.parent / plain_name(p), key, manifest.get(name))
            elif p.name not in (FOLDER_KEY, MANIFEST, "model.sig"):  # the signature: registry.signing
                (view / rel).symlink_to(p.resolve())
        yield view
