"""Loss masks come from the template's own rendering; packed attention never crosses examples."""

from __future__ import annotations

import torch

from lamina.data.chat import tokenize_chat
from lamina.data.packing import micro_batches, pack_rows
from lamina.methods.trained import load_model
from lamina.models.attention import forward_inputs


def test_assistant_mask_covers_exactly_the_replies_even_when_they_repeat_the_prompt(tiny_random):
    _, tok = load_model(tiny_random)
    messages = [
        {"role": "user", "content": "say blue kettle"},
        {"role": "assistant", "content": "blue kettle"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "blue kettle"},
    ]
    t = tokenize_chat(tok, messages)
    labelled = [tok.decode([i]) for i, lab in zip(t.input_ids, t.labels, strict=True) if lab]
    # Both replies with their end markers; the prompt's "blue kettle" is not labelled.
    assert "".join(labelled) == "blue kettle<|end|>\nblue kettle<|end|>\n"
    assert sum(t.labels) == len(labelled)
    everything = tokenize_chat(tok, messages, loss_on="all")
    assert all(everything.labels)


def _examples(tok, texts):
    from lamina.data.chat import tokenize_text

    return [tokenize_text(tok, s) for s in texts]


TEXTS = [
    "my order 1234 for a blue kettle arrived broken. Note: order 1234, blue kettle, broken.",
    "Each order number has four digits.",
    "hello there, order 5678 is late",
    "the grey clock came without the cable",
]


def test_packed_logits_equal_per_example_logits(tiny_random):
    model, tok = load_model(tiny_random)
    model.eval()
    examples = _examples(tok, TEXTS)
    (batch,) = micro_batches(examples, row_len=64, micro_tokens=10_000)
    assert batch.input_ids.shape[0] < len(examples)  # really packed: several examples share a row
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    with torch.no_grad():
        inputs, _ = forward_inputs(batch, "masked")
        packed = model(**inputs).logits
        for seq_id, i in enumerate(order):
            alone = model(input_ids=torch.tensor([examples[i].input_ids])).logits[0]
            rows, cols = torch.nonzero(batch.seq_ids == seq_id, as_tuple=True)
            assert torch.allclose(packed[rows, cols], alone, atol=1e-5), seq_id


def test_loss_positions_predict_labelled_tokens_in_both_layouts(tiny_random):
    _, tok = load_model(tiny_random)
    examples = _examples(tok, TEXTS)
    (batch,) = micro_batches(examples, row_len=64, micro_tokens=10_000)
    padded = batch.input_ids.reshape(-1)
    # Position p predicts token p+1, in the padded and in the flat (varlen) layout alike.
    assert torch.equal(padded[batch.loss_index + 1], batch.targets)
    assert torch.equal(batch.flat_ids[batch.flat_loss_index + 1], batch.targets)
    assert batch.n_loss == sum(len(e.input_ids) - 1 for e in examples)
    assert batch.cu_seqlens.tolist()[-1] == batch.n_tokens == len(batch.flat_ids)


def test_micro_batches_respect_the_token_budget(tiny_random):
    _, tok = load_model(tiny_random)
    examples = _examples(tok, TEXTS * 6)
    rows = pack_rows(examples, 64)
    assert all(sum(len(e.input_ids) for e in r) <= 64 for r in rows)
    batches = micro_batches(examples, row_len=64, micro_tokens=128)
    assert all(b.n_tokens <= 128 for b in batches)
    assert sum(b.n_tokens for b in batches) == sum(len(e.input_ids) for e in examples)
