"""OMS signatures: a signed directory verifies; each kind of tampering is refused by name."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from lamina.errors import LaminaError
from lamina.registry import signing


@pytest.fixture
def signed(tmp_path):
    signing.init_keys()
    d = tmp_path / "artifact"
    (d / "adapter").mkdir(parents=True)
    (d / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (d / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (d / "README.md").write_text("# card\n")
    info = signing.sign_dir(d)
    assert info["files"] == 3 and info["signer"] == signing.fingerprint()
    return d


def test_signed_directory_verifies_and_names_signer(signed):
    assert signing.verify_dir(signed) == signing.fingerprint()
    assert set(signing.signed_files(signed)) == {
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "README.md",
    }


def test_changed_file_is_named(signed):
    (signed / "adapter" / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_model.safetensors"):
        signing.verify_dir(signed)


def test_added_file_is_named(signed):
    (signed / "adapter" / "extra.bin").write_bytes(b"x")
    with pytest.raises(LaminaError, match=r"added file adapter/extra.bin"):
        signing.verify_dir(signed)


def test_added_gitignore_is_not_silently_ignored(signed):
    (signed / ".gitignore").write_text("*\n")
    with pytest.raises(LaminaError, match=r"added file .gitignore"):
        signing.verify_dir(signed)


def test_missing_file_is_named(signed):
    (signed / "README.md").unlink()
    with pytest.raises(LaminaError, match=r"missing file README.md"):
        signing.verify_dir(signed)


def test_unsigned_directory_is_refused(signed):
    (signed / signing.SIGNATURE).unlink()
    with pytest.raises(LaminaError, match=r"not signed"):
        signing.verify_dir(signed)


def test_signature_from_another_key_is_refused(signed, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(signed, other)
    signing.init_keys(force=True)  # the workspace now trusts a different key
    with pytest.raises(LaminaError, match=r"model.sig: signature check failed: Key mismatch"):
        signing.verify_dir(other)


def test_edited_signature_is_refused(signed):
    sig = signed / signing.SIGNATURE
    bundle = json.loads(sig.read_text())
    raw = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = ("B" if raw[10] != "B" else "C").join(
        [raw[:10], raw[11:]]
    )
    sig.write_text(json.dumps(bundle))
    with pytest.raises(LaminaError, match=r"model.sig: signature is not valid"):
        signing.verify_dir(signed)


def test_existing_key_is_not_overwritten(signed):
    before = signing.key_paths()[0].read_bytes()
    with pytest.raises(LaminaError, match=r"already exists"):
        signing.init_keys()
    assert signing.key_paths()[0].read_bytes() == before


def test_password_protected_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_SIGNING_PASSWORD", "correct horse")
    signing.init_keys()
    assert b"ENCRYPTED" in signing.key_paths()[0].read_bytes()
    d = tmp_path / "a"
    d.mkdir()
    (d / "w.safetensors").write_bytes(b"1")
    signing.sign_dir(d)
    signing.verify_dir(d)
    monkeypatch.setenv("LAMINA_SIGNING_PASSWORD", "wrong")
    with pytest.raises(LaminaError, match=r"LAMINA_SIGNING_PASSWORD"):
        signing.sign_dir(d)


def test_check_before_load(signed, tmp_path, workspace):
    assert signing.check_before_load(signed) == signing.fingerprint()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert signing.check_before_load(plain) is None  # an ordinary HF directory: nothing to check
    inside = workspace / "registry" / "m" / "v"
    shutil.copytree(signed, inside)
    assert signing.check_before_load(inside / "adapter") == signing.fingerprint()  # verifies the version
    (inside / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_config.json"):
        signing.check_before_load(inside / "adapter")
    (inside / signing.SIGNATURE).unlink()
    with pytest.raises(LaminaError, match=r"not signed"):
        signing.check_before_load(inside)
    with pytest.raises(LaminaError, match=r"not signed"):
        signing.check_before_load(inside / "adapter")
    (signed / "README.md").write_text("edited")
    with pytest.raises(LaminaError, match=r"changed file README.md"):
        signing.check_before_load(signed)


def test_hf_loader_refuses_a_tampered_registered_checkpoint(signed, workspace):
    """A full fine-tune's model/ inside a registered version is checked before it is loaded."""
    from lamina.models.loading import load_hf_model

    version = workspace / "registry" / "m" / "v"
    shutil.copytree(signed, version)
    (version / "adapter" / "adapter_model.safetensors").write_bytes(b"\x02" * 64)
    with pytest.raises(LaminaError, match=r"changed file adapter/adapter_model.safetensors"):
        load_hf_model(version / "adapter")


def test_private_keys_live_outside_the_workspace(signed, workspace):
    """A copy or backup of the workspace carries no private key, and a key pair dropped into
    the workspace is not the one that verifies."""
    private, public = signing.key_paths()
    assert workspace not in private.parents and workspace not in public.parents
    assert oct(private.stat().st_mode & 0o777) == "0o600" and oct(private.parent.stat().st_mode & 0o777) == "0o700"
    assert not list(workspace.rglob("*.key.pem"))


def test_a_key_pair_planted_in_the_workspace_cannot_re_sign(signed, workspace, monkeypatch, tmp_path):
    """The attack: replace the workspace's key pair and re-sign tampered weights. The planted
    pair signs, but only the pinned key outside the workspace verifies."""
    (signed / "adapter" / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    planted = workspace / "keys"
    ours = os.environ["LAMINA_CONFIG_DIR"]
    monkeypatch.setenv("LAMINA_CONFIG_DIR", str(tmp_path / "attacker-config"))
    signing.init_keys()  # a fresh pair, as the attacker would make
    planted.mkdir(parents=True, exist_ok=True)
    for p in signing.key_paths():
        shutil.copy(p, planted / p.name)
    signing.sign_dir(signed)
    monkeypatch.setenv("LAMINA_CONFIG_DIR", ours)
    with pytest.raises(LaminaError, match=r"signature check failed: Key mismatch"):
        signing.verify_dir(signed)
