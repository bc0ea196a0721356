"""The embedded default base model's shape: a tiny Llama and its BPE tokenizer, built offline.

Built from a config and a tokenizer trained with `tokenizers` on the bundled corpus and
saved as a normal Hugging Face directory, so the demo and the tests load it exactly as they
would load a real model. Pretraining it is a training job: lamina.train.tiny_base does that
and caches the result; this module only builds and saves.
"""

from __future__ import annotations

from pathlib import Path

from lamina.fsio import atomic_dir

SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
ARCH = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}
VOCAB_SIZE = 768


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer with single-digit tokens (numbers copy digit by digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **ARCH,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def corpus_texts() -> list[str]:
    from lamina.data.synthetic import GENERIC, SYSTEM, pretraining_corpus

    # The system prompt is general text a base would have seen.
    return pretraining_corpus() + GENERIC + [SYSTEM]


def save_untrained(target: Path, seed: int = 0, **arch) -> Path:
    """A randomly initialised tiny model + tokenizer as an HF directory (fast; for tests).

    `arch` overrides the architecture (e.g. hidden_size=64, num_hidden_layers=2).
    """
    texts = corpus_texts()[:2000]
    tokenizer = build_tokenizer(texts)
    model = build_model(tokenizer, seed)
    if arch:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(**{**model.config.to_dict(), **arch})
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with atomic_dir(target, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
