"""Encryption at rest: AES-256-GCM envelope encryption, streamed in chunks.

Each file gets its own random data key; the data key is stored in the file's header,
wrapped (AES-GCM) by the workspace master key. Rotating the master key therefore rewrites
headers only. The body is a sequence of authenticated chunks whose nonce carries the chunk
index and whose associated data marks the last chunk, so reordering, truncation or a flipped
bit all fail authentication instead of decrypting to garbage. The AES-GCM itself is the
`cryptography` package's; the chunked file format is Lamina's own because no maintained
library streams authenticated files this way (Fernet holds a whole file in memory).

The master key comes from `LAMINA_MASTER_KEY` (64 hex digits or base64 of 32 bytes), else the
file named by `LAMINA_MASTER_KEY_FILE`, else `master.key` in the workspace's secrets directory
outside the workspace (`workspace.secrets_dir()`; made on first use).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lamina import fsio, workspace
from lamina.errors import LaminaError

MAGIC = b"LAMINA-ENC1\n"
CHUNK = 1 << 16
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class MasterKey:
    key: bytes
    source: str  # where it came from, for messages ("env", or a file path)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"lamina-master-key-id" + self.key).hexdigest()[:16]


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            raw = bytes.fromhex(text)
    if raw is None:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise LaminaError("a master key must be 32 bytes, written as 64 hex digits or base64", where)
    return raw


def default_key_path() -> Path:
    path = workspace.secrets_dir() / "master.key"
    legacy = workspace.home() / "keys" / "master.key"
    if legacy.is_file() and not path.exists():
        legacy.replace(path)  # workspaces made before keys moved out: moved once, in place
    return path


def _write_key_file(path: Path, key: bytes) -> None:
    fsio.write_text(path, key.hex() + "\n")
    os.chmod(path, 0o600)


def load_master_key(create: bool = True) -> MasterKey:
    """The current master key (see the module docstring for where it is looked up)."""
    env = os.environ.get("LAMINA_MASTER_KEY")
    if env:
        return MasterKey(_parse_key(env, "LAMINA_MASTER_KEY"), "env")
    path = Path(os.environ.get("LAMINA_MASTER_KEY_FILE") or default_key_path())
    if not path.is_file():
        if os.environ.get("LAMINA_MASTER_KEY_FILE") or not create:
            raise LaminaError("master key file not found", str(path))
        _write_key_file(path, secrets.token_bytes(32))
    return MasterKey(_parse_key(_key_text(path), str(path)), str(path))


def _key_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise LaminaError("a master key file holds text (64 hex digits or base64), not binary data", str(path)) from None


def _pending_path() -> Path:
    return workspace.secrets_dir() / "master.key.next"


def keyring() -> dict[str, bytes]:
    """Keys that may open a file: the current one, plus a rotation's new key if one was
    interrupted half-way (its files are then wrapped by either)."""
    current = load_master_key()
    ring = {current.key_id: current.key}
    pending = _pending_path()
    if pending.is_file():
        nxt = MasterKey(_parse_key(_key_text(pending), str(pending)), str(pending))
        ring[nxt.key_id] = nxt.key
    return ring


# --- file format -------------------------------------------------------------------------


def _header(master: MasterKey, data_key: bytes, prefix: bytes) -> bytes:
    wrap_nonce = secrets.token_bytes(12)
    wrapped = AESGCM(master.key).encrypt(wrap_nonce, data_key, b"lamina-dek" + prefix)
    fields = {
        "key_id": master.key_id,
        "prefix": base64.b64encode(prefix).decode(),
        "wrap_nonce": base64.b64encode(wrap_nonce).decode(),
        "wrapped_key": base64.b64encode(wrapped).decode(),
    }
    return json.dumps(fields, sort_keys=True).encode() + b"\n"


def _chunk_nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _chunk_aad(index: int, final: bool) -> bytes:
    return b"lamina-chunk" + struct.pack(">I?", index, final)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class EncryptedWriter:
    """Streams plaintext into an encrypted file; the file appears only on a clean close."""

    def __init__(self, f, master: MasterKey):
        self._f = f
        self._aes: AESGCM | None = None
        data_key = AESGCM.generate_key(bit_length=256)
        self._prefix = secrets.token_bytes(8)
        self._aes = AESGCM(data_key)
        f.write(MAGIC + _header(master, data_key, self._prefix))
        self._buf = bytearray()
        self._index = 0

    def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) > CHUNK:
            self._emit(bytes(self._buf[:CHUNK]), final=False)
            del self._buf[:CHUNK]

    def _emit(self, plain: bytes, final: bool) -> None:
        sealed = self._aes.encrypt(
            _chunk_nonce(self._prefix, self._index), plain, _chunk_aad(self._index, final)
        )
        self._f.write(_LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def finish(self) -> None:
        self._emit(bytes(self._buf), final=True)
        self._buf.clear()


@contextlib.contextmanager
def open_encrypted_writer(
    path: str | os.PathLike, master: MasterKey | None = None
) -> Iterator[EncryptedWriter]:
    """`with open_encrypted_writer(p) as w: w.write(b"...")` — atomic, streamed."""
    master = master or load_master_key()
    with _atomic_file(Path(path)) as f:
        writer = EncryptedWriter(f, master)
        yield writer
        writer.finish()


def encrypt_bytes(path: str | os.PathLike, data: bytes, master: MasterKey | None = None) -> None:
    with open_encrypted_writer(path, master) as w:
        w.write(data)


def _read_header(f, where: str) -> tuple[dict, bytes]:
    if f.read(len(MAGIC)) != MAGIC:
        raise LaminaError("not a Lamina encrypted file (bad magic)", where)
    line = f.readline(4096)
    try:
        header = json.loads(line)
        prefix = base64.b64decode(header["prefix"])
        if len(prefix) != 8:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise LaminaError("encrypted file header is damaged", where) from None
    return header, line


def _unwrap(header: dict, ring: dict[str, bytes], where: str) -> bytes:
    key = ring.get(header.get("key_id", ""))
    if key is None:
        raise LaminaError(
            f"encrypted with master key {header.get('key_id')!r}, but the current master key is "
            f"{sorted(ring)!r}: wrong LAMINA_MASTER_KEY or key file?",
            where,
        )
    prefix = base64.b64decode(header["prefix"])
    try:
        return AESGCM(key).decrypt(
            base64.b64decode(header["wrap_nonce"]),
            base64.b64decode(header["wrapped_key"]),
            b"lamina-dek" + prefix,
        )
    except (InvalidTag, ValueError, binascii.Error):
        raise LaminaError(
            "the wrapped data key failed authentication (tampered or wrong key)", where
        ) from None


def iter_decrypt(path: str | os.PathLike, ring: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """Yield plaintext chunks; raises LaminaError on any tampering, before yielding bad data."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise LaminaError("no such encrypted file", where)
    ring = ring if ring is not None else keyring()
    with open(path, "rb") as f:
        header, _ = _read_header(f, where)
        prefix = base64.b64decode(header["prefix"])
        aes = AESGCM(_unwrap(header, ring, where))
        index = 0
        while True:
            size_raw = f.read(_LEN.size)
            if len(size_raw) < _LEN.size:
                raise LaminaError(f"encrypted file is truncated (chunk {index} missing)", where)
            (size,) = _LEN.unpack(size_raw)
            sealed = f.read(size)
            if size > CHUNK + 16 or len(sealed) != size:
                raise LaminaError(f"encrypted file is damaged at chunk {index}", where)
            nonce = _chunk_nonce(prefix, index)
            try:
                plain = aes.decrypt(nonce, sealed, _chunk_aad(index, False))
                final = False
            except InvalidTag:
                try:
                    plain = aes.decrypt(nonce, sealed, _chunk_aad(index, True))
                    final = True
                except InvalidTag:
                    raise LaminaError(f"chunk {index} failed authentication (tampered)", where) from None
            yield plain
            if final:
                if f.read(1):
                    raise LaminaError("data after the final chunk (tampered)", where)
                return
            index += 1


def decrypt_bytes(path: str | os.PathLike, ring: dict[str, bytes] | None = None) -> bytes:
    return b"".join(iter_decrypt(path, ring))


def iter_lines(path: str | os.PathLike, ring: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """Plaintext lines (with their newline) of an encrypted text file, in bounded memory."""
    rest = b""
    for chunk in iter_decrypt(path, ring):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def rewrap(path: str | os.PathLike, ring: dict[str, bytes], new: MasterKey) -> bool:
    """Re-wrap one file's data key under `new`; the body is copied untouched. False if the
    file is already wrapped by `new`."""
    path = Path(path)
    where = str(path)
    with open(path, "rb") as f:
        header, _ = _read_header(f, where)
        if header["key_id"] == new.key_id:
            return False
        data_key = _unwrap(header, ring, where)
        prefix = base64.b64decode(header["prefix"])
        with _atomic_file(path) as out:
            out.write(MAGIC + _header(new, data_key, prefix))
            while block := f.read(1 << 20):
                out.write(block)
    return True


def encrypted_files(root: Path | None = None) -> list[Path]:
    root = root or workspace.home()
    return sorted(p for p in root.rglob("*.enc") if p.is_file() and not p.name.startswith("."))


# --- rotation and derived keys ----------------------------------------------------------


@dataclass
class Rotation:
    old_key_id: str
    new_key_id: str
    rewrapped: list[str]
    key_written_to: str


def rotate_master_key(new_key_file: str | os.PathLike | None = None) -> Rotation:
    """Make a new master key and re-wrap every encrypted file's data key under it.

    The new key is written to `keys/master.key.next` first, so an interrupted rotation leaves
    every file readable (by the old key or the new) and a second run finishes the job. With
    the key in `LAMINA_MASTER_KEY`, `new_key_file` says where the new key goes (the
    environment cannot be rewritten from here).
    """
    current = load_master_key()
    if current.source == "env" and new_key_file is None:
        raise LaminaError(
            "the master key comes from LAMINA_MASTER_KEY; pass --new-key-file to say where the new key goes",
            "LAMINA_MASTER_KEY",
        )
    if new_key_file is not None:  # checked before any file is re-wrapped
        target = Path(new_key_file)
        if target.is_dir() or not target.parent.is_dir():
            raise LaminaError("must name a file in an existing directory", "--new-key-file")
    pending = _pending_path()
    if pending.is_file():
        new = MasterKey(_parse_key(_key_text(pending), str(pending)), str(pending))
    else:
        new = MasterKey(secrets.token_bytes(32), str(pending))
        _write_key_file(pending, new.key)
    ring = {current.key_id: current.key, new.key_id: new.key}
    done = [str(p) for p in encrypted_files() if rewrap(p, ring, new)]
    target = Path(new_key_file) if new_key_file is not None else Path(current.source)
    _write_key_file(target, new.key)
    pending.unlink()
    return Rotation(current.key_id, new.key_id, done, str(target))


def pseudonym_key() -> bytes:
    """The workspace's HMAC key for pseudonyms, kept encrypted under the master key so the
    same value maps to the same pseudonym for as long as the workspace lives."""
    key, store = staged_pseudonym_key()
    store()
    return key


def staged_pseudonym_key() -> tuple[bytes, Callable[[], None]]:
    """The pseudonym key and a function that stores it. On a workspace without one, the key
    is made in memory and written (with the master key, if that is new too) only when the
    caller stores it — so work that is refused first leaves no keys behind."""
    path = workspace.home() / "keys" / "pseudonym.key.enc"
    if path.is_file():
        return decrypt_bytes(path), lambda: None
    key = secrets.token_bytes(32)

    def store() -> None:
        if not path.is_file():
            encrypt_bytes(path, key)
        elif decrypt_bytes(path) != key:
            raise LaminaError("another command made the workspace's pseudonym key meanwhile; run again", str(path))

    return key, store
