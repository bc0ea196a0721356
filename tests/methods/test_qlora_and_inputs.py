"""QLoRA's base really is NF4 with double quantisation and its optimiser option trains;
bad method settings and damaged artifacts fail with the key or file named, changing nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from method_helpers import base

from lamina import methods
from lamina.errors import LaminaError
from lamina.fsio import sha256_file
from lamina.recipe import BottleneckSpec, Ia3Spec, parse_recipe
from lamina.train.setup import setup as set_up_run

sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
from helpers import recipe_dict, write_task  # noqa: E402


def test_qlora_base_is_nf4_double_quant_and_paged_8bit_adamw_trains(tiny_random, tmp_path):
    import bitsandbytes as bnb

    train_file, _ = write_task(tmp_path / "data", n_train=8, n_eval=1)
    data = recipe_dict(tiny_random, train_file, steps=2, tokens_per_step=256, lr=1e-2)
    data["method"] = {"name": "qlora", "r": 4, "alpha": 8, "optimizer": "paged_adamw_8bit"}
    s = set_up_run(parse_recipe(data))
    linear = [m for m in s.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear) == 2 * 7  # every projection of both layers
    for m in linear:
        state = m.weight.quant_state
        assert m.weight.dtype == torch.uint8 and state.quant_type == "nf4" and state.nested  # double quant
        assert m.compute_dtype == torch.bfloat16
    assert isinstance(s.loop.optimizer, bnb.optim.PagedAdamW8bit)
    before = {n: p.detach().clone() for n, p in s.model.named_parameters() if p.requires_grad}
    s.loop.run()
    assert all(not torch.equal(p, before[n]) for n, p in s.model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ({"name": "bottleneck", "style": "houlsbi"}, "method.style"),
        ({"name": "qlora", "quant_type": "int4"}, "method.quant_type"),
        ({"name": "prefix", "num_virtual_tokens": 0}, "method.num_virtual_tokens"),
        ({"name": "ia3", "target_module": ["k_proj"]}, "method.target_module: unknown key"),
    ],
)
def test_bad_method_settings_name_the_key(tmp_path, method, key):
    data = {"data": {"train": "x.jsonl"}, "method": method}
    with pytest.raises(LaminaError, match=key.replace(".", r"\.")):
        parse_recipe(data, "r.yaml")


def test_ia3_feedforward_outside_targets_is_refused(tiny_random):
    model, _ = base(tiny_random)
    spec = Ia3Spec(target_modules=["k_proj"], feedforward_modules=["down_proj"])
    with pytest.raises(LaminaError, match="method.target_modules"):
        methods.get("ia3").apply(model, spec)


def test_damaged_artifacts_are_named_and_left_as_they_are(tiny_random, tmp_path):
    model, _ = base(tiny_random)
    method = methods.get("bottleneck")
    model = method.apply(model, BottleneckSpec(size=4))
    artifact = tmp_path / "adapter"
    artifact.mkdir()
    method.save(model, artifact)
    config = artifact / "bottleneck.json"
    config.write_text(config.read_text().replace('"hidden_size": 64', '"hidden_size": 65'))
    digests = {p.name: sha256_file(p) for p in artifact.iterdir()}
    with pytest.raises(LaminaError, match="bottleneck.json"):
        method.load(base(tiny_random)[0], artifact)
    (artifact / "bitfit.json").write_text("{}")
    with pytest.raises(LaminaError, match="bitfit.safetensors"):
        methods.get("bitfit").load(base(tiny_random)[0], artifact)
    (artifact / "bitfit.json").unlink()
    assert {p.name: sha256_file(p) for p in artifact.iterdir()} == digests
