"""A whole model stored sealed (a registered full checkpoint, or a base the registry stored)
hashes as its plaintext, loads the same weights through the private view, passes the base check
a version makes before serving, and refuses a flipped ciphertext byte at load."""

from __future__ import annotations

import shutil

import pytest
import torch

from lamina.errors import LaminaError
from lamina.governance import at_rest
from lamina.models.loading import hash_model_files, load_hf_model


def test_a_sealed_model_hashes_loads_and_checks_as_its_plaintext(tiny_random, tmp_path):
    from lamina.serve.servable import check_base

    sealed = tmp_path / "sealed"
    shutil.copytree(tiny_random, sealed)
    assert at_rest.seal_folder(sealed)  # the weights were sealed...
    assert not list(sealed.glob("*.safetensors"))  # ...and no plaintext copy is left
    recorded = hash_model_files(tiny_random)
    assert hash_model_files(sealed) == recorded  # what training records about a base is unchanged
    assert check_base(sealed, recorded, "test base") == check_base(tiny_random, recorded, "test base")

    plain_model, sealed_model = load_hf_model(tiny_random, torch.device("cpu")), load_hf_model(
        sealed, torch.device("cpu")
    )
    for (name, a), (_, b) in zip(plain_model.state_dict().items(), sealed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    target = next(sealed.glob("*.safetensors.sealed"))
    data = bytearray(target.read_bytes())
    data[-40] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(LaminaError, match=r"safetensors.sealed: chunk \d+ failed authentication"):
        load_hf_model(sealed, torch.device("cpu"))
