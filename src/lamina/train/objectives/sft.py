"""Supervised fine-tuning (and plain language modelling): cross-entropy on labelled tokens.

Only positions whose next token carries a label go through the LM head, in chunks, so the
full-vocabulary logits of a packed batch never exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamina.models.attention import forward_inputs

LOGIT_CHUNK = 4096


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
    """log p(target) at each labelled position, computed chunk by chunk."""
    parts = []
    for start in range(0, n, LOGIT_CHUNK):
        logits = head(hidden[start : start + LOGIT_CHUNK]).float()
        parts.append(-F.cross_entropy(logits, targets[start : start + LOGIT_CHUNK], reduction="none"))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


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
