"""Attention that never crosses packed examples.

Two plans for the same packed micro-batch (lamina.data.packing.MicroBatch):
- `masked` (CPU, and any device without varlen kernels): rows stay [rows, row_len] and a
  block-diagonal causal boolean mask goes to transformers' SDPA attention, built once per
  forward. Padding tokens form their own block so no query row is all-masked (that would
  give NaNs whose backward leaks into real tokens).
- `varlen` (CUDA and CPU): padding is dropped, the micro-batch becomes one flat sequence, and
  attention runs over cumulative sequence lengths — no mask is ever materialised. On CUDA
  the kernel is `torch.nn.attention.varlen.varlen_attn`; on CPU (which that kernel does not
  support) each example's queries, keys and values are gathered into a right-padded row and
  run through causal SDPA: right padding never reaches a real token under a causal mask, so
  only attention pays for padding, while every linear layer sees the real tokens alone. It
  is registered with transformers' AttentionInterface as `lamina_varlen`; transformers then
  builds no mask for it.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

VARLEN = "lamina_varlen"
_registered = False


def block_causal_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] boolean mask: True where query i may attend key j."""
    length = seq_ids.shape[1]
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    return (same & causal)[:, None]


def varlen_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True  # the padded-rows path below
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
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        raise RuntimeError("lamina_varlen attention needs cu_seq_lens_q (a packed batch)")
    max_len = kwargs["max_length_q"]
    if query.device.type == "cpu":
        return _padded_forward(query, key, value, cu, max_len, scaling), None
    from torch.nn.attention.varlen import varlen_attn

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


def _padded_forward(query, key, value, cu: torch.Tensor, max_len: int, scaling) -> torch.Tensor:
    """Varlen attention as causal SDPA over right-padded rows, one per example: [tokens, heads, dim].

    Padding slots gather the example's first token (any real value does: under the causal
    mask no real query reaches a slot after its own example's end), and their outputs are
    dropped when the real positions are gathered back."""
    cu = cu.long()
    n_tokens = query.shape[2]
    flat = torch.arange(n_tokens, device=cu.device)
    example = torch.searchsorted(cu[1:], flat, right=True)
    offset = flat - cu[example]
    slots = cu[:-1, None] + torch.arange(max_len, device=cu.device)  # [examples, max_len]
    slots = torch.where(slots < cu[1:, None], slots, cu[:-1, None])
    # [1, heads, tokens, dim] -> [examples, heads, max_len, dim], in float32: the CPU's flash
    # kernel is ~4x slower in bf16 than in fp32 (measured fwd + bwd on short rows).
    q, k, v = (t[0][:, slots].transpose(0, 1).float() for t in (query, key, value))
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling,
                                             enable_gqa=q.shape[1] != k.shape[1])
    return out[example, :, offset][None].to(query.dtype)


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
