"""Every method, on the tiny random model: only its own parameters train (every base weight
bit-identical), save -> load reproduces the logits, and merged logits match unmerged (or the
method refuses to merge)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from method_helpers import OWN, SPECS, base, logits

from lamina.errors import LaminaError
from lamina.models.loading import load_hf_model
from lamina.recipe import parse_recipe
from lamina.train.setup import setup as set_up_run

sys.path.insert(0, str(Path(__file__).parents[1] / "spine"))
from helpers import recipe_dict, write_task  # noqa: E402


def train_in_memory(tiny_random, tmp_path, name: str):
    train_file, _ = write_task(tmp_path / "data", n_train=16, n_eval=2)
    data = recipe_dict(tiny_random, train_file, steps=2, tokens_per_step=256, lr=1e-2)
    data["method"] = SPECS[name]
    s = set_up_run(parse_recipe(data))
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    s.loop.run()
    return s, before


@pytest.mark.parametrize("name", sorted(OWN))
def test_only_own_parameters_train_and_save_load_merge(tiny_random, tmp_path, name):
    s, before = train_in_memory(tiny_random, tmp_path, name)
    model, method = s.model, s.method
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert trainable and all(any(tag in n for tag in OWN[name]) for n in trainable), sorted(trainable)[:5]
    assert changed == trainable  # every base weight bit-identical, every trainable one moved
    assert len(before) > len(trainable)

    model.eval()
    trained = logits(model, s.tokenizer)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    method.save(model, artifact)
    loaded = method.load(base(tiny_random)[0], artifact).eval()
    torch.testing.assert_close(logits(loaded, s.tokenizer), trained, rtol=0, atol=1e-6)

    if not method.MERGEABLE:
        with pytest.raises(LaminaError, match="cannot be merged"):
            method.merge(loaded)
        return
    merged = method.merge(loaded).eval()
    assert not any(hasattr(m, "lamina_bias") or "lora" in n for n, m in merged.named_modules())
    got = logits(merged, s.tokenizer)
    assert float((got - trained).abs().max()) < 1e-4
    merged.save_pretrained(tmp_path / "merged", safe_serialization=True)
    plain = load_hf_model(tmp_path / "merged", torch.device("cpu")).eval()  # a plain transformers model
    assert float((logits(plain, s.tokenizer) - trained).abs().max()) < 1e-4
