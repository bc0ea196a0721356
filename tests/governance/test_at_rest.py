"""Encryption at rest (lamina.governance.at_rest): sealed folders and encrypted record files
hold no plaintext, decrypt only into a private view that is gone after the load, name a
missing or wrong key, refuse a flipped byte, and survive a master-key rotation."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.governance import at_rest, crypto

SECRET = "ORDER=4821; the blue kettle"


def _folder(root):
    """A folder shaped like a registered version: weights in a sub-folder, plain files beside."""
    (root / "adapter").mkdir(parents=True)
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(root / "adapter" / "adapter_model.safetensors"))
    (root / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    (root / "run.json").write_text("{}")
    return root


def test_policy_switch_defaults_off_and_is_audited(monkeypatch):
    from lamina.governance import access, audit

    monkeypatch.setenv("LAMINA_USER", "admin")
    assert at_rest.enabled() is False  # no policy yet: the recipe model's default
    access.init_policy("admin")
    assert at_rest.set_enabled(True) is False and at_rest.enabled() is True
    assert access.load_policy().security.encrypt_at_rest is True
    last = audit.entries()[-1]
    assert (last["action"], last["user"], last["details"]["on"]) == ("policy.encrypt_at_rest", "admin", True)
    monkeypatch.setenv("LAMINA_USER", "mallory")
    with pytest.raises(LaminaError, match="lacks permission 'policy'"):
        at_rest.set_enabled(False)
    assert at_rest.enabled() is True


def test_a_sealed_folder_holds_no_plaintext_and_loads_through_a_private_view(tmp_path):
    root = _folder(tmp_path / "v")
    plain = (root / "adapter" / "adapter_model.safetensors").read_bytes()
    digests = at_rest.seal_folder(root)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors.sealed", "folder.key.enc", "run.json",
        "sealed.json",
    ]  # fmt: skip
    stored = (root / "adapter" / "adapter_model.safetensors.sealed").read_bytes()
    # A safetensors file opens with its header's length and the header's JSON: neither is stored.
    assert plain[8:10] == b'{"' and b'"dtype":"F32"' in plain
    assert plain[:10] not in stored and b'"dtype":"F32"' not in stored and b'"w"' not in stored
    assert digests == {"adapter/adapter_model.safetensors": hashlib.sha256(plain).hexdigest()}
    assert at_rest.plain_sha256(root / "adapter" / "adapter_model.safetensors") == digests[
        "adapter/adapter_model.safetensors"
    ]
    with at_rest.plain_view(root / "adapter") as view:
        assert view != root / "adapter"
        assert stat.S_IMODE(os.stat(view).st_mode) == 0o700
        assert (view / "adapter_model.safetensors").read_bytes() == plain
        assert load_file(str(view / "adapter_model.safetensors"))["w"][4095].item() == 4095.0
        assert (view / "adapter_config.json").read_text() == '{"r": 4}'
        seen = view
    assert not seen.exists()  # removed as soon as the load is done
    with at_rest.plain_view(root) as whole:  # the version's root: sub-folders mirrored, key files left out
        assert (whole / "adapter" / "adapter_model.safetensors").read_bytes() == plain
        assert sorted(p.name for p in whole.iterdir()) == ["adapter", "run.json"]
    unsealed = _folder(tmp_path / "plain")
    with at_rest.plain_view(unsealed) as view:
        assert view == unsealed  # a plaintext folder is used as it is


def test_a_flipped_ciphertext_byte_or_a_swapped_folder_key_is_refused(tmp_path):
    root = _folder(tmp_path / "v")
    at_rest.seal_folder(root)
    other = _folder(tmp_path / "w")
    at_rest.seal_folder(other)
    sealed = root / "adapter" / "adapter_model.safetensors.sealed"
    good = sealed.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(LaminaError, match=r"adapter_model.safetensors.sealed: chunk \d+ failed authentication"):
        with at_rest.plain_view(root):
            pass
    sealed.write_bytes(good)
    (root / "folder.key.enc").write_bytes((other / "folder.key.enc").read_bytes())
    with pytest.raises(LaminaError, match=r"not wrapped by this folder's key"):
        with at_rest.plain_view(root):
            pass


def test_record_files_encrypt_and_read_back_line_by_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": f"{SECRET} #{i}"}) + "\n" for i in range(3000)]  # several chunks
    path.write_text("".join(lines))
    stored = at_rest.seal_file(path)
    assert stored.name == "train.jsonl.enc" and not path.exists()
    assert SECRET.encode() not in stored.read_bytes()
    assert [x.decode() for x in at_rest.iter_lines(path)] == lines
    assert at_rest.locate(path) == stored


def test_a_wrong_or_missing_master_key_is_named(tmp_path, monkeypatch):
    path = tmp_path / "eval.jsonl"
    path.write_text(SECRET + "\n")
    at_rest.seal_file(path)
    key_file = crypto.default_key_path()
    monkeypatch.setenv("LAMINA_MASTER_KEY", "11" * 32)
    with pytest.raises(LaminaError, match=r"eval.jsonl.enc: encrypted with master key .* wrong LAMINA_MASTER_KEY"):
        list(at_rest.iter_lines(path))
    monkeypatch.delenv("LAMINA_MASTER_KEY")
    key_file.rename(tmp_path / "backup.key")
    with pytest.raises(LaminaError, match=r"eval.jsonl.enc: stored encrypted, and the master key is missing"):
        list(at_rest.iter_lines(path))
    assert not key_file.exists()  # reading never makes a new key in place of the lost one
    (tmp_path / "backup.key").rename(key_file)
    assert list(at_rest.iter_lines(path)) == [(SECRET + "\n").encode()]


def test_rotation_rewraps_the_folder_key_and_leaves_the_sealed_bytes_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "home"))
    root = _folder(tmp_path / "home" / "registry" / "m" / "v1")
    at_rest.seal_folder(root)
    records = tmp_path / "home" / "datasets" / "abc" / "train.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text(SECRET + "\n")
    at_rest.seal_file(records)
    sealed = root / "adapter" / "adapter_model.safetensors.sealed"
    before, key_before = sealed.read_bytes(), (root / "folder.key.enc").read_bytes()
    old = crypto.load_master_key()
    rot = crypto.rotate_master_key()
    assert sorted(rot.rewrapped) == sorted([str(root / "folder.key.enc"), str(records) + ".enc"])
    assert sealed.read_bytes() == before and (root / "folder.key.enc").read_bytes() != key_before
    with at_rest.plain_view(root) as view:
        assert load_file(str(view / "adapter" / "adapter_model.safetensors"))["w"].sum().item() == sum(range(4096))
    monkeypatch.setenv("LAMINA_MASTER_KEY", old.key.hex())  # the retired key opens nothing now
    with pytest.raises(LaminaError, match="encrypted with master key"):
        with at_rest.plain_view(root):
            pass
