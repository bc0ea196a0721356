"""Language-model pretraining through the same loop (used to build the tiny base)."""

from __future__ import annotations

import time

import torch

from lamina.data.chat import Tokenized, tokenize_text
from lamina.models.attention import attention_plan
from lamina.models.loading import pick_device
from lamina.recipe import TrainSpec
from lamina.train.build_loop import make_loop
from lamina.train.loop import Loop
from lamina.train.progress import training_bar
from lamina.train.seeding import seed_everything


def lm_loop(model, examples: list[Tokenized], *, seed: int, steps: int, tokens_per_step: int, lr: float,
            warmup_steps: int, max_length: int) -> Loop:
    """The loop that trains `model` with loss on every token, attention set up for the device."""
    seed_everything(seed)
    device = pick_device()
    plan, attn = attention_plan(device)
    if attn != "sdpa":
        from lamina.models.attention import register

        register()
        model.set_attn_implementation(attn)
    model.to(device)
    spec = TrainSpec(objective="lm", tokens_per_step=tokens_per_step, steps=steps, lr=lr,
                     warmup_steps=warmup_steps, weight_decay=0.01, log_every=20)
    return make_loop(model, examples, spec, device, plan, seed, max_length)


def pretrain_lm(model, tokenizer, texts: list[str], *, seed: int, steps: int, tokens_per_step: int, lr: float,
                warmup_steps: int, max_length: int, progress: bool = True) -> dict:
    """Train `model` in place with loss on every token; returns a summary."""
    examples = []
    for text in texts:
        tok = tokenize_text(tokenizer, text)
        tok.input_ids, tok.labels = tok.input_ids[:max_length], tok.labels[:max_length]
        examples.append(tok)
    loop = lm_loop(model, examples, seed=seed, steps=steps, tokens_per_step=tokens_per_step, lr=lr,
                   warmup_steps=warmup_steps, max_length=max_length)
    with training_bar("pretraining tiny base", steps, 0, progress) as bar:
        loop.progress = bar
        state = loop.run()
    model.set_attn_implementation("sdpa")
    model.to(torch.device("cpu")).eval()
    return {"steps": state.step, "tokens": state.tokens, "final_loss": state.history[-1]["loss"],
            "train_seconds": round(state.seconds, 1), "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9)),
            "precision": loop.precision(), "torch_threads": torch.get_num_threads()}


def measure_tokens_per_s(model, examples: list[Tokenized], *, timed_steps: int = 1, **settings) -> float:
    """Training tokens/s of `model` on `examples` under `settings` (those of pretrain_lm): one
    warm-up step, then `timed_steps` timed ones. Trains the model it is given: pass a throwaway."""
    loop = lm_loop(model, examples, **{**settings, "steps": timed_steps + 1})
    loop.model.train()
    loop.step()
    started, tokens = time.perf_counter(), 0
    for _ in range(timed_steps):
        tokens += loop.step()[1]
    return tokens / (time.perf_counter() - started)
