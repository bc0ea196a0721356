"""On CPU, packed examples train through varlen attention over right-padded rows: the same
logits as each example alone, the same gradients as the block-diagonal mask."""

from __future__ import annotations

import torch

from lamina.data.chat import tokenize_text
from lamina.data.packing import micro_batches
from lamina.methods.trained import load_model
from lamina.models.attention import VARLEN, attention_plan, forward_inputs, register
from lamina.train.objectives.sft import SFT

TEXTS = [
    "my order 1234 for a blue kettle arrived broken. Note: order 1234, blue kettle, broken.",
    "Each order number has four digits.",
    "hello there, order 5678 is late",
    "the grey clock came without the cable",
    "A refund is paid back to the card that was used for the order.",
]


def _batch(tok):
    examples = [tokenize_text(tok, s) for s in TEXTS]
    (batch,) = micro_batches(examples, row_len=64, micro_tokens=10_000)
    assert batch.input_ids.shape[0] < len(examples)  # really packed
    return examples, batch


def test_cpu_plan_is_varlen():
    assert attention_plan(torch.device("cpu")) == ("varlen", VARLEN)


def test_cpu_varlen_logits_equal_per_example_logits(tiny_random):
    model, tok = load_model(tiny_random)
    model.eval()
    examples, batch = _batch(tok)
    register()
    model.set_attn_implementation(VARLEN)
    with torch.no_grad():
        inputs, _ = forward_inputs(batch, "varlen")
        flat = model(**inputs).logits[0]
        model.set_attn_implementation("sdpa")
        at = 0
        for n in batch.cu_seqlens.diff().tolist():
            ids = batch.flat_ids[at : at + n]
            alone = model(input_ids=ids[None]).logits[0]
            assert torch.allclose(flat[at : at + n], alone, atol=1e-5)
            at += n
    assert at == len(batch.flat_ids) == sum(len(e.input_ids) for e in examples)


def test_cpu_varlen_gradients_equal_the_masked_plan(tiny_random):
    grads = {}
    for plan in ("masked", "varlen"):
        model, tok = load_model(tiny_random)
        _, batch = _batch(tok)
        if plan == "varlen":
            register()
            model.set_attn_implementation(VARLEN)
        loss, _ = SFT.loss(model, batch, plan)
        loss.backward()
        grads[plan] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    (loss_m, g_m), (loss_v, g_v) = grads["masked"], grads["varlen"]
    assert torch.allclose(loss_m, loss_v, rtol=1e-5)
    for name, g in g_m.items():
        assert torch.allclose(g, g_v[name], atol=1e-5, rtol=1e-4), name
