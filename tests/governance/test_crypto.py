"""Envelope encryption at rest: round trips, tamper detection, wrong keys, rotation."""

from __future__ import annotations

import os

import pytest

from lamina.errors import LaminaError
from lamina.governance import crypto


def _payload(n: int = 200_000) -> bytes:
    # More than three chunks, not a multiple of the chunk size.
    return os.urandom(n)


def test_round_trip_multi_chunk_and_empty(tmp_path):
    data = _payload()
    crypto.encrypt_bytes(tmp_path / "a.enc", data)
    assert crypto.decrypt_bytes(tmp_path / "a.enc") == data
    crypto.encrypt_bytes(tmp_path / "e.enc", b"")
    assert crypto.decrypt_bytes(tmp_path / "e.enc") == b""
    # The plaintext is not visible in the file.
    assert data[:64] not in (tmp_path / "a.enc").read_bytes()


def test_each_file_has_its_own_data_key(tmp_path):
    crypto.encrypt_bytes(tmp_path / "a.enc", b"same text" * 10)
    crypto.encrypt_bytes(tmp_path / "b.enc", b"same text" * 10)
    assert (tmp_path / "a.enc").read_bytes() != (tmp_path / "b.enc").read_bytes()


def test_iter_lines_streams_lines(tmp_path):
    lines = [f'{{"i": {i}, "pad": "{"x" * (i % 300)}"}}\n'.encode() for i in range(2000)]
    crypto.encrypt_bytes(tmp_path / "l.enc", b"".join(lines))
    assert list(crypto.iter_lines(tmp_path / "l.enc")) == lines


@pytest.mark.parametrize("where", ["body", "last_byte", "header_key", "truncate", "append"])
def test_tampering_fails_authentication(tmp_path, where):
    path = tmp_path / "t.enc"
    crypto.encrypt_bytes(path, _payload(100_000))
    raw = bytearray(path.read_bytes())
    header_end = raw.index(b"\n", len(crypto.MAGIC)) + 1
    if where == "body":
        raw[header_end + 100] ^= 0x01
    elif where == "last_byte":
        raw[-1] ^= 0x80
    elif where == "header_key":
        raw[header_end - 10] = ord("A") if raw[header_end - 10] != ord("A") else ord("B")
    elif where == "truncate":
        # Drop the final chunk entirely: every remaining chunk still authenticates alone.
        raw = raw[: header_end + 4 + crypto.CHUNK + 16]
    else:
        raw += b"extra"
    path.write_bytes(bytes(raw))
    with pytest.raises(LaminaError) as err:
        crypto.decrypt_bytes(path)
    assert str(path) in str(err.value)


def test_wrong_master_key_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_MASTER_KEY", "11" * 32)
    crypto.encrypt_bytes(tmp_path / "k.enc", b"secret")
    monkeypatch.setenv("LAMINA_MASTER_KEY", "22" * 32)
    with pytest.raises(LaminaError, match="wrong LAMINA_MASTER_KEY"):
        crypto.decrypt_bytes(tmp_path / "k.enc")
    monkeypatch.setenv("LAMINA_MASTER_KEY", "not a key")
    with pytest.raises(LaminaError, match="LAMINA_MASTER_KEY: a master key must be 32 bytes"):
        crypto.load_master_key()


def test_master_key_file_outside_workspace(tmp_path, monkeypatch):
    keyfile = tmp_path / "elsewhere" / "master.key"
    monkeypatch.setenv("LAMINA_MASTER_KEY_FILE", str(keyfile))
    with pytest.raises(LaminaError, match="master key file not found"):
        crypto.load_master_key()
    keyfile.parent.mkdir()
    keyfile.write_text("ab" * 32)
    assert crypto.load_master_key().key == bytes.fromhex("ab" * 32)


def test_rotate_rewraps_every_file_and_old_key_no_longer_opens(workspace):
    a, b = workspace / "raw" / "a.enc", workspace / "raw" / "b.enc"
    crypto.encrypt_bytes(a, b"alpha" * 30_000)
    crypto.encrypt_bytes(b, b"beta")
    body_before = a.read_bytes().split(b"\n", 2)[2]
    old = crypto.load_master_key()
    rot = crypto.rotate_master_key()
    assert rot.old_key_id == old.key_id and rot.new_key_id != old.key_id
    assert sorted(rot.rewrapped) == sorted([str(a), str(b)])
    new = crypto.load_master_key()
    assert new.key_id == rot.new_key_id
    assert crypto.decrypt_bytes(a) == b"alpha" * 30_000 and crypto.decrypt_bytes(b) == b"beta"
    # Only the header changed: the data key, and so the body, is the same.
    assert a.read_bytes().split(b"\n", 2)[2] == body_before
    with pytest.raises(LaminaError, match="wrong LAMINA_MASTER_KEY"):
        crypto.decrypt_bytes(a, {old.key_id: old.key})
    assert not (workspace / "keys" / "master.key.next").exists()


def test_interrupted_rotation_stays_readable_and_resumes(workspace, monkeypatch):
    a, b = workspace / "raw" / "a.enc", workspace / "raw" / "b.enc"
    crypto.encrypt_bytes(a, b"one")
    crypto.encrypt_bytes(b, b"two")
    real_rewrap = crypto.rewrap
    calls = []

    def crash_on_second(path, ring, new):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rewrap(path, ring, new)

    monkeypatch.setattr(crypto, "rewrap", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        crypto.rotate_master_key()
    monkeypatch.setattr(crypto, "rewrap", real_rewrap)
    # Half rotated: both files still open with the keyring (old key + pending key).
    assert crypto.decrypt_bytes(a) == b"one" and crypto.decrypt_bytes(b) == b"two"
    rot = crypto.rotate_master_key()
    assert rot.rewrapped == [str(b)]
    assert crypto.decrypt_bytes(a) == b"one" and crypto.decrypt_bytes(b) == b"two"


def test_rotation_with_env_key_needs_a_destination(tmp_path, monkeypatch, workspace):
    monkeypatch.setenv("LAMINA_MASTER_KEY", "33" * 32)
    crypto.encrypt_bytes(workspace / "x.enc", b"x")
    with pytest.raises(LaminaError, match="--new-key-file"):
        crypto.rotate_master_key()
    rot = crypto.rotate_master_key(tmp_path / "new.key")
    monkeypatch.setenv("LAMINA_MASTER_KEY", (tmp_path / "new.key").read_text().strip())
    assert crypto.load_master_key().key_id == rot.new_key_id
    assert crypto.decrypt_bytes(workspace / "x.enc") == b"x"


def test_pseudonym_key_is_stable_and_encrypted(workspace):
    k1 = crypto.pseudonym_key()
    assert crypto.pseudonym_key() == k1 and len(k1) == 32
    assert k1 not in (workspace / "keys" / "pseudonym.key.enc").read_bytes()
