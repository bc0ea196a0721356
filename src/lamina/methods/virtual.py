"""Virtual tokens that every example sees: prompt and prefix tuning on unpacked rows.

PEFT prepends its virtual tokens (prompt tuning) or prefix keys/values (prefix tuning) once
per row, inside `PeftModel.forward`. The SFT objective runs the decoder directly on packed
rows, so there the virtual tokens would be missing, and in a packed row only the first example
could attend to them anyway. These methods therefore put a hook on the model that the
objective consults: it unpacks the micro-batch into one right-padded row per example and
runs exactly what `PeftModel.forward` runs for a batch of those rows. The result is the
unpacked computation, tested against PEFT's own forward one example at a time.
"""

from __future__ import annotations

import functools

import torch

from lamina.errors import LaminaError


def attach(model):
    """Route the objective's forward through `hidden_states` below; standard SDPA attention,
    since the rows are padded (packed-only attention kernels cannot take a padding mask)."""
    model.get_base_model().set_attn_implementation("sdpa")
    model.lamina_hidden_states = functools.partial(hidden_states, model)
    return model


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [E, L] right-padded, mask [E, L], example and offset of every loss position)
    from a packed micro-batch, computed on the device without a host sync."""
    cu = batch.cu_seqlens.long()
    n_examples, length = cu.shape[0] - 1, batch.max_len
    flat = torch.arange(batch.flat_ids.shape[0], device=cu.device)
    example = torch.searchsorted(cu[1:], flat, right=True)
    offset = flat - cu[example]
    ids = torch.zeros(n_examples, length, dtype=torch.long, device=cu.device)
    mask = torch.zeros(n_examples, length, dtype=torch.long, device=cu.device)
    ids[example, offset] = batch.flat_ids
    mask[example, offset] = 1
    loss = batch.flat_loss_index
    return ids, mask, example[loss], offset[loss]


def hidden_states(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of the labelled positions [n_loss, hidden] and their targets."""
    from peft import PeftType

    config = model.active_peft_config
    n_virtual = config.num_virtual_tokens
    ids, mask, rows, cols = unpack(batch)
    n_examples = ids.shape[0]
    decoder = model.get_base_model().get_decoder()
    prefix_mask = torch.ones(n_examples, n_virtual, dtype=mask.dtype, device=mask.device)
    mask = torch.cat([prefix_mask, mask], dim=1)
    if config.peft_type == PeftType.PREFIX_TUNING:
        if model.training and model.get_base_model().is_gradient_checkpointing:
            # transformers drops the cache (the prefix) inside checkpointed layers: it would train nothing.
            raise LaminaError(
                "prefix tuning cannot train with gradient checkpointing", "train.gradient_checkpointing"
            )
        cache = model.get_prompt(n_examples, max_cache_len=ids.shape[1] + n_virtual)
        out = decoder(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        shift = 0  # the prefix lives in the cache, not in the hidden states
    else:
        embeds = model.word_embeddings(ids)
        prompts = model.get_prompt(batch_size=n_examples).to(embeds.dtype)
        out = decoder(inputs_embeds=torch.cat([prompts, embeds], dim=1), attention_mask=mask, use_cache=False)
        shift = n_virtual
    hidden = out.last_hidden_state
    return hidden[rows, cols + shift], batch.targets
