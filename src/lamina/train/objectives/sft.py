"""Supervised fine-tuning (and plain language modelling): cross-entropy on labelled tokens.

Only positions whose next token carries a label go through the LM head, in chunks, and no
chunk's logits are kept for the backward (see HeadLogprobs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamina.methods.lora_fused import compute_dtype
from lamina.models.attention import forward_inputs

LOGIT_CHUNK = 1024  # rows of logits alive at once: 1024 x 152k vocabulary in fp32 is 0.6 GB


def model_parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and the LM head of a causal LM, through any PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def hidden_states(model, batch, plan: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of the labelled positions [n_loss, hidden], and their targets."""
    own = getattr(model, "lamina_hidden_states", None)
    if own is not None:  # a method whose virtual tokens every example must see (lamina.methods.virtual)
        return own(batch)
    decoder, _ = model_parts(model)
    inputs, index = forward_inputs(batch, plan)
    out = decoder(**inputs, use_cache=False)
    hidden = out.last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index), batch.targets


def token_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """log p(target) at each labelled position [n], float32, computed chunk by chunk."""
    if type(head) is torch.nn.Linear:
        dtype = compute_dtype(hidden, head.weight)
        bias = None if head.bias is None else head.bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            return HeadLogprobs.apply(hidden.to(dtype), head.weight.to(dtype), bias, targets)
    parts = []  # a head with its own forward (e.g. an added trainable bias): autograd keeps each chunk
    for start in range(0, n, LOGIT_CHUNK):
        logits = head(hidden[start : start + LOGIT_CHUNK]).float()
        parts.append(-F.cross_entropy(logits, targets[start : start + LOGIT_CHUNK], reduction="none"))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


class HeadLogprobs(torch.autograd.Function):
    """log softmax(h W^T + b)[target] per row, one chunk of logits alive at a time.

    Left to autograd, every chunk's float32 log-softmax would stay saved until the backward
    (Qwen2.5-0.5B, 16k labelled tokens: 9.3 GiB). Here nothing vocabulary-sized is kept. With
    a frozen head the forward also stores d logp / d h = W[target] - softmax W, a
    hidden-sized tensor, so the backward is one multiply by the incoming per-token gradient
    (whatever the objective: SFT's sum, DPO's sequence sums). A trainable head (full
    fine-tuning) recomputes each chunk's logits in the backward for the weight's gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        trainable_head = weight.requires_grad or (bias is not None and bias.requires_grad)
        jac = None
        if torch.is_grad_enabled() and hidden.requires_grad and not trainable_head:
            jac = torch.empty_like(hidden)
        for start in range(0, n, LOGIT_CHUNK):
            end = min(start + LOGIT_CHUNK, n)
            logits = F.linear(hidden[start:end], weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            t = targets[start:end]
            out[start:end] = logits.gather(1, t[:, None]).squeeze(1) - lse
            if jac is not None:
                probs = logits.sub_(lse[:, None]).exp_().to(weight.dtype)
                jac[start:end] = torch.sub(weight[t], probs @ weight)
        ctx.save_for_backward(hidden, weight, bias, targets, jac)
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, jac = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if jac is not None:
            return jac * grad[:, None].to(jac.dtype), None, None, None
        grad_h = torch.empty_like(hidden) if needs[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and needs[2] else None
        for start in range(0, hidden.shape[0], LOGIT_CHUNK):
            end = min(start + LOGIT_CHUNK, hidden.shape[0])
            h = hidden[start:end]
            logits = F.linear(h, weight, bias).float()
            # d logp / d logits = onehot(target) - softmax, scaled by the incoming gradient
            dlogits = torch.softmax(logits, dim=-1).mul_(-grad[start:end, None])
            rows = torch.arange(end - start, device=h.device)
            dlogits[rows, targets[start:end]] += grad[start:end]
            if grad_b is not None:
                grad_b += dlogits.sum(0)
            dlogits = dlogits.to(weight.dtype)
            if grad_h is not None:
                grad_h[start:end] = dlogits @ weight
            if grad_w is not None:
                grad_w += (dlogits.t() @ h).float()
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None)


class SFT:
    """Sum of token cross-entropies; the loop divides by the step's labelled-token count."""

    name = "sft"

    @staticmethod
    def count(batch) -> int:
        return batch.n_loss

    @staticmethod
    def loss(model, batch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden, targets = hidden_states(model, batch, plan)
        _, head = model_parts(model)
        return -token_logprobs(head, hidden, targets, batch.n_loss).sum(), {}
