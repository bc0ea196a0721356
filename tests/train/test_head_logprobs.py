"""The LM head's log-probabilities keep no logits for the backward and give autograd's gradients,
for any per-token upstream gradient (SFT sums them, DPO weighs sequences)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lamina.train.objectives import sft


def reference(head, hidden, targets):
    return -F.cross_entropy(head(hidden).float(), targets, reduction="none")


@pytest.mark.parametrize("trainable_head", [False, True])
def test_head_logprobs_match_autograd(monkeypatch, trainable_head):
    monkeypatch.setattr(sft, "LOGIT_CHUNK", 7)  # several chunks, the last one partial
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=trainable_head).requires_grad_(trainable_head)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    weights = torch.randn(23)  # a non-uniform upstream gradient, as DPO's

    ref = reference(head, hidden, targets)
    (ref * weights).sum().backward()
    ref_grads = [hidden.grad.clone()] + [p.grad.clone() for p in head.parameters() if p.requires_grad]
    hidden.grad = None
    for p in head.parameters():
        p.grad = None

    out = sft.token_logprobs(head, hidden, targets, 23)
    torch.testing.assert_close(out, ref.detach())
    (out * weights).sum().backward()
    grads = [hidden.grad] + [p.grad for p in head.parameters() if p.requires_grad]
    assert len(grads) == (3 if trainable_head else 1)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_head_logprobs_keep_nothing_vocabulary_sized():
    torch.manual_seed(0)
    vocab, n = 4096, 64
    head = torch.nn.Linear(16, vocab, bias=False).requires_grad_(False)
    hidden = torch.randn(n, 16, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))
    kept = []

    def pack(t):
        if t.data_ptr() != head.weight.data_ptr():  # the weight is kept anyway
            kept.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sft.token_logprobs(head, hidden, targets, n).sum()
    assert sum(kept) < n * vocab / 16, kept  # autograd alone keeps a [n, vocab] log-softmax
