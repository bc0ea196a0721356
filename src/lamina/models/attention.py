"""Attention that never crosses packed examples.

Two plans for the same packed micro-batch (lamina.data.packing.MicroBatch):
- `masked` (CPU, and any device without varlen kernels): rows stay [rows, row_len] and a
  block-diagonal causal boolean mask goes to transformers' SDPA attention, built once per
  forward. Padding tokens form their own block so no query row is all-masked (that would
  give NaNs whose backward leaks into real tokens).
- `varlen` (CUDA): padding is dropped, the micro-batch becomes one flat sequence, and
  `torch.nn.attention.varlen.varlen_attn` runs over cumulative sequence lengths — no mask
  is ever materialised. It is registered with transformers' AttentionInterface as
  `lamina_varlen`; transformers then builds no mask for it.
"""

from __future__ import annotations

import inspect

import torch

VARLEN = "lamina_varlen"
_registered = False


def block_causal_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] boolean mask: True where query i may attend key j."""
    length = seq_ids.shape[1]
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    return (same & causal)[:, None]


def varlen_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def attention_plan(device: torch.device) -> tuple[str, str]:
    """(plan, transformers attn implementation) for the device."""
    if varlen_available(device):
        return "varlen", "lamina_varlen"
    return "masked", "sdpa"


def _varlen_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from torch.nn.attention.varlen import varlen_attn

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        raise RuntimeError("lamina_varlen attention needs cu_seq_lens_q (a packed batch)")
    max_len = kwargs["max_length_q"]
    # transformers hands over [1, heads, tokens, dim]; the kernel wants [tokens, heads, dim].
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    extra = {}
    params = _varlen_params()
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
    if scaling is not None and "scale" in params:
        extra["scale"] = scaling
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=(-1, 0), **extra)
    return out[None], None


_PARAMS: set[str] | None = None


def _varlen_params() -> set[str]:
    global _PARAMS
    if _PARAMS is None:
        from torch.nn.attention.varlen import varlen_attn

        _PARAMS = set(inspect.signature(varlen_attn).parameters)
    return _PARAMS


def register() -> None:
    """Make `lamina_varlen` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, _varlen_forward)
    _registered = True


def forward_inputs(batch, plan: str) -> tuple[dict, torch.Tensor]:
    """Model keyword arguments for a packed micro-batch under the given attention plan, and
    the indices (into the flattened hidden states) of the positions that carry the loss."""
    if plan == "varlen":
        return {
            "input_ids": batch.flat_ids[None],
            "position_ids": batch.flat_positions[None],
            "cu_seq_lens_q": batch.cu_seqlens,
            "cu_seq_lens_k": batch.cu_seqlens,
            "max_length_q": batch.max_len,
            "max_length_k": batch.max_len,
        }, batch.flat_loss_index
    return {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "attention_mask": block_causal_mask(batch.seq_ids),
    }, batch.loss_index
