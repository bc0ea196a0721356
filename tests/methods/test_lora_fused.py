"""The fused LoRA and SwiGLU nodes compute what PEFT's and transformers' own forwards compute,
with the same gradients, and keep less for the backward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lamina.methods import lora_fused
from lamina.recipe import LoraSpec

ARCHS = {
    "llama": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=128),
    # Qwen2 has biases on q/k/v.
    "qwen2": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=128),
}


def tiny(arch: str):
    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, **ARCHS[arch])
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def lora_pair(arch: str, dtype=torch.float32):
    """(PEFT's own LoRA model, the same model with fused nodes), B initialised non-zero so
    every gradient is non-trivial. PEFT keeps the adapters fp32 on a bf16 base."""
    from peft import LoraConfig, get_peft_model

    spec = LoraSpec()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=spec.target_modules, task_type="CAUSAL_LM")
    plain = get_peft_model(tiny(arch).to(dtype), config)
    torch.manual_seed(1)
    for name, p in plain.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    fused = copy.deepcopy(plain)
    assert lora_fused.install(fused) == 2 * 7 + 2  # seven LoRA linears and one MLP per layer
    return plain, fused


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), grads


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fused_lora_matches_peft_loss_and_gradients(arch):
    plain, fused = lora_pair(arch)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    loss_p, grads_p = loss_and_grads(plain, ids)
    loss_f, grads_f = loss_and_grads(fused, ids)
    assert torch.allclose(loss_p, loss_f, atol=1e-6)
    assert grads_p.keys() == grads_f.keys() and len(grads_p) == 2 * 2 * 7
    for name, g in grads_p.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(grads_f[name], g, rtol=1e-4, atol=1e-7, msg=name)


def test_fused_full_fine_tuning_mlp_matches_gradients():
    plain = tiny("llama")
    fused = copy.deepcopy(plain)
    assert lora_fused.install(fused) == 2  # no LoRA: only the MLPs
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    loss_p, grads_p = loss_and_grads(plain, ids)
    loss_f, grads_f = loss_and_grads(fused, ids)
    assert torch.allclose(loss_p, loss_f, atol=1e-6)
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.gate_proj.weight",
                 "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"):
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-7, msg=name)


def test_disabled_adapter_falls_back_to_the_base():
    """DPO's reference is the model with its adapters disabled: the fused path must step aside."""
    plain, fused = lora_pair("llama")
    base = tiny("llama")
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with fused.disable_adapter():
            off = fused(input_ids=ids).logits
        on = fused(input_ids=ids).logits
        expected = base(input_ids=ids).logits
    torch.testing.assert_close(off, expected)
    assert (on - expected).abs().max() > 1e-4  # the adapters do something when enabled


def saved_bytes(model, ids) -> int:
    """Bytes of distinct storages the autograd graph keeps for one forward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(storages.values())


def test_fused_nodes_keep_less_for_the_backward():
    """A bf16 base under autocast, as on a GPU: PEFT's casts give q/k/v and gate/up private
    copies of their shared input, and the MLP keeps gate, silu(gate), up and their product."""
    plain, fused = lora_pair("llama", torch.bfloat16)
    ids = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kept_plain, kept_fused = saved_bytes(plain, ids), saved_bytes(fused, ids)
    tokens, hidden, inter, layers = 4 * 64, 64, 160, 2
    # Two of q/k/v's input copies, one of gate/up's, and two intermediate-sized tensors, in bf16.
    assert kept_plain - kept_fused >= 2 * tokens * layers * (3 * hidden + 2 * inter), (kept_plain, kept_fused)
