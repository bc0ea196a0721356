"""Sizing micro-batches from memory: a step's token budget is split so that the activations
saved for the backward pass fit the recipe's activation budget.

The estimate counts what a decoder layer keeps per token in bf16: about ten hidden-sized
tensors (norm inputs and outputs, q/k/v, attention output, residuals) and four
intermediate-sized ones (gate, up, their product, the activation). Checked on an H200: it
predicts 45 GB for Qwen2.5-0.5B at 32k tokens (57.5 GiB measured peak without fused kernels,
47.8 GiB with them) and 52 GB for Llama-3.1-8B at 8k tokens (64.5 GiB peak with 16 GiB of weights).
With activation checkpointing a layer keeps only its input, plus one layer's full set during
recomputation. LoRA and full fine-tuning of SwiGLU models keep less since their linears and MLP
run as fused nodes (lamina.methods.lora_fused) and the LM head keeps no logits: peaks of 27.8 GiB
and 47.1 GiB for those two cases, so for them the estimate errs on the safe side.
"""

from __future__ import annotations

BYTES = 2  # bf16 activations


def bytes_per_token(config, checkpointing: bool) -> int:
    hidden = config.hidden_size
    inter = getattr(config, "intermediate_size", 4 * hidden)
    layers = config.num_hidden_layers
    per_layer = BYTES * (10 * hidden + 4 * inter)
    if checkpointing:
        return BYTES * hidden * layers + per_layer
    return per_layer * layers


def micro_tokens(config, tokens_per_step: int, budget_gib: float, checkpointing: bool, row_len: int) -> int:
    """The largest micro-batch (at least one row) whose activations fit `budget_gib`."""
    fit = int(budget_gib * 2**30 / bytes_per_token(config, checkpointing))
    return max(min(tokens_per_step, fit), row_len)


def default_budget_gib(device) -> float:
    """40% of the device's memory. On an H200 this keeps whole 32k-token steps of
    Qwen2.5-0.5B and 8k-token steps of Llama-3.1-8B in one micro-batch: splitting them made
    the step CPU-bound (kernel launches), measured at half the tokens/s."""
    import torch

    return 0.4 * torch.cuda.get_device_properties(device).total_memory / 2**30
