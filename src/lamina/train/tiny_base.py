"""The embedded tiny base as a training job: pretrain it once, cache it, and resolve `tiny`.

lamina.models.tiny builds the untrained model and tokenizer; here they are pretrained briefly
with Lamina's own loop (loss on all tokens) and cached in the workspace under a key hashing
the config, corpus, pretraining settings and seed. `resolve_base` is the base resolver for
code at the training layer and above: `tiny` is built on first use, anything else goes to
lamina.models.loading.resolve_base, which only loads what exists.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from lamina import workspace
from lamina.console import console
from lamina.fsio import atomic_dir, sha256_json
from lamina.models.loading import resolve_base as resolve_existing
from lamina.models.tiny import ARCH, CHAT_TEMPLATE, VOCAB_SIZE, build_model, build_tokenizer, corpus_texts
from lamina.train.pretrain import measure_tokens_per_s, pretrain_lm

PRETRAIN = {"steps": 120, "tokens_per_step": 4096, "lr": 3e-3, "warmup_steps": 20, "max_length": 256}
TYPICAL_LENGTHS = (20, 52)  # tokens per corpus text (min, max), for estimate_pretraining's stand-in rows


@functools.cache
def cache_key(seed: int = 0) -> str:
    return sha256_json({"arch": ARCH, "vocab": VOCAB_SIZE, "pretrain": PRETRAIN, "corpus": sha256_json(corpus_texts()),
                        "template": CHAT_TEMPLATE, "seed": seed, "format": 1})


def cached_path(seed: int = 0) -> Path:
    return workspace.subdir("bases") / f"tiny-{cache_key(seed)[:16]}"


def is_cached(seed: int = 0) -> bool:
    return (cached_path(seed) / "config.json").is_file()


def estimate_pretraining(seed: int = 0) -> dict:
    """How long pretraining will take here: tokens/s measured on a few steps of the same
    model, loop and token budget (random weights; random token rows of the corpus's typical
    lengths), times the tokens pretraining trains on. Takes a second or two."""
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lamina.data.chat import Tokenized

    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, bos_token_id=None, eos_token_id=1, pad_token_id=0,
                                         **ARCH))
    lengths = [rng.randint(*TYPICAL_LENGTHS) for _ in range(2 * PRETRAIN["tokens_per_step"] // TYPICAL_LENGTHS[0])]
    examples = [Tokenized([rng.randrange(VOCAB_SIZE) for _ in range(n)], [True] * n) for n in lengths]
    rate = measure_tokens_per_s(model, examples, seed=seed, **PRETRAIN)
    tokens = PRETRAIN["steps"] * PRETRAIN["tokens_per_step"]
    return {"seconds": tokens / rate, "tokens": tokens, "tokens_per_s": rate}


TINY_NOTICE = (
    "Building the embedded `tiny` base once. It only knows Lamina's bundled ticket task: for your own "
    "data set `model.base` to a real model (a local Hugging Face directory or a hub id)."
)


def ensure_tiny_base(seed: int = 0, progress: bool = True) -> Path:
    """Path of the pretrained tiny base, building and caching it on first use."""
    target = cached_path(seed)
    if is_cached(seed):
        return target
    if progress:  # what the result is (and is not) for; `lamina demo` also says how long it takes
        console.print(TINY_NOTICE, highlight=False, markup=False, soft_wrap=True)
    texts = corpus_texts()
    started = time.time()
    tokenizer = build_tokenizer(texts)
    model = build_model(tokenizer, seed)
    stats = pretrain_lm(model, tokenizer, texts, seed=seed, progress=progress, **PRETRAIN)
    with atomic_dir(target, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        stats["seconds"] = round(time.time() - started, 1)
        (tmp / "lamina_base.json").write_text(json.dumps({"key": cache_key(seed), **stats}, indent=2))
    return target


def resolve_base(ref: str, revision: str | None = None) -> Path:
    """A local directory for a base-model reference (`tiny` built on first use), or a clear error."""
    if ref == "tiny":
        return ensure_tiny_base()
    return resolve_existing(ref, revision)
