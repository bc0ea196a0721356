"""Builders shared by the method tests."""

from __future__ import annotations

import torch

from lamina.data.chat import tokenize_chat
from lamina.data.packing import micro_batches
from lamina.data.synthetic import task_splits
from lamina.models.loading import load_hf_model, load_tokenizer
from lamina.train.objectives.sft import SFT

# Trainable parameters each method may create (by name); everything else must stay frozen.
OWN = {
    "lora": ("lora_",),
    "qlora": ("lora_",),
    "ia3": ("ia3_l",),
    "prompt": ("prompt_encoder",),
    "prefix": ("prompt_encoder",),
    "bottleneck": (".bottleneck.",),
    "bitfit": ("lamina_bias", ".bias"),
}


def examples(tokenizer, n: int = 6, seed: int = 0):
    train, _ = task_splits(n_train=n, n_eval=1, seed=seed)
    return [tokenize_chat(tokenizer, r["messages"]) for r in train]


def packed_batch(tokenizer, n: int = 6, row_len: int = 512):
    """One micro-batch that packs several examples into each row."""
    batches = micro_batches(examples(tokenizer, n), row_len, 100_000)
    assert len(batches) == 1 and batches[0].input_ids.shape[0] < n  # really packed
    return batches[0]


def base(path):
    torch.manual_seed(0)
    return load_hf_model(path, torch.device("cpu")), load_tokenizer(path)


def sft_loss(model, batch) -> torch.Tensor:
    loss, _ = SFT.loss(model, batch, "masked")
    return loss / batch.n_loss


def logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor(
        [tokenize_chat(tokenizer, task_splits(n_train=2, n_eval=1, seed=5)[1][0]["messages"]).input_ids]
    )
    from lamina.models.generate import inference_mode

    # As generation does: a model set up for training attends through the packed-only kernel.
    with inference_mode(model):
        return model(input_ids=ids).logits.float()


# Small settings for the tiny random model (QLoRA in fp32 compute so merged-vs-unmerged can be exact).
SPECS = {
    "lora": {"name": "lora", "r": 4, "alpha": 8},
    "qlora": {"name": "qlora", "r": 4, "alpha": 8, "compute_dtype": "fp32"},
    "bottleneck": {"name": "bottleneck", "style": "houlsby", "size": 8},
    "ia3": {"name": "ia3"},
    "prompt": {"name": "prompt", "num_virtual_tokens": 4},
    "prefix": {"name": "prefix", "num_virtual_tokens": 4, "projection": True, "projection_hidden": 16},
    "bitfit": {"name": "bitfit"},
}
