"""Shared pieces of the side-by-side benchmarks: public model configs (random weights) and a
learnable synthetic token stream that both tools train on.

Each example is a prompt of random tokens followed by a completion that repeats a slice of
the prompt, so the loss on completion tokens can fall — proof that a tool is training, not
just spinning.
"""

from __future__ import annotations

import random

# Architectures of the public checkpoints (numbers from their config.json files).
CONFIGS = {
    "tiny": dict(model_type="llama", hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=2048, max_position_embeddings=4096,
                 rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                         rms_norm_eps=1e-6, hidden_act="silu"),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
                         rms_norm_eps=1e-5, hidden_act="silu",
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}


def build_config(name: str):
    from transformers import AutoConfig

    spec = dict(CONFIGS[name])
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def matmul_params(model) -> int:
    """Parameters that take part in a matrix product per token: every linear weight of the
    decoder plus the LM head (embedding lookups are not FLOPs)."""
    import torch

    total = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    out = model.get_output_embeddings()
    if out is not None and id(out.weight) not in seen:
        total += out.weight.numel()
    return total


def examples(n: int, vocab: int, seed: int = 0, min_len: int = 128, max_len: int = 1024, active: int = 2000):
    """(input_ids, completion_mask) pairs; completion = a copied slice of the prompt.

    Tokens come from a Zipf-like distribution over `active` ids, so even a few steps of
    training show a falling loss (the unigram statistics), and copying lowers it further.
    """
    rng = random.Random(seed)
    ids = list(range(16, 16 + min(active, vocab - 16)))
    weights = [1.0 / (rank + 1) for rank in range(len(ids))]
    out = []
    for _ in range(n):
        total = rng.randint(min_len, max_len)
        comp = max(8, total // 3)
        prompt = rng.choices(ids, weights, k=total - comp)
        start = rng.randrange(0, max(1, len(prompt) - comp))
        completion = (prompt[start:] + prompt)[:comp]
        out.append((prompt + completion, [0] * len(prompt) + [1] * len(completion)))
    return out
