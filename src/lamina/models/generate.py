"""Generation from chat prompts, shared by evaluation, the demo, PPO rollouts and serving.

Prompts are rendered with the tokenizer's chat template, left-padded into one batch and
decoded with transformers' `generate` (KV cache). Greedy unless a temperature is given.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@contextlib.contextmanager
def inference_mode(model):
    """Eval mode with standard SDPA attention (packed-training attention needs packed input)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = base.config._attn_implementation
    was_training = model.training
    if previous != "sdpa":
        base.set_attn_implementation("sdpa")
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        if previous != "sdpa":
            base.set_attn_implementation(previous)
        model.train(was_training)


def encode_prompts(tokenizer, prompts: list[list[dict]], device) -> dict:
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in enc.items()}


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, batch_size: int = 64, seed: int | None = None) -> list[str]:
    """Completions for chat prompts, in order."""
    device = next(model.parameters()).device
    if seed is not None:
        torch.manual_seed(seed)
    outputs: list[str] = []
    with inference_mode(model):
        for start in range(0, len(prompts), batch_size):
            enc = encode_prompts(tokenizer, prompts[start : start + batch_size], device)
            if _prompt_learning(model):
                new = _decode_without_cache(model, enc, max_new_tokens, tokenizer, temperature, top_p)
            else:
                sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
                    "do_sample": False}
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
                new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return outputs


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _decode_without_cache(model, enc: dict, max_new_tokens: int, tokenizer, temperature: float,
                          top_p: float) -> torch.Tensor:
    """Token by token over the whole sequence, no KV cache, one prompt at a time: PEFT's
    prefix and prompt tuning apply their virtual tokens in a plain forward, but under
    transformers 5's cached `generate` the prefix steers only the first new token (measured:
    teacher-forced loss 0.11, greedy output in the base's own format). Unpadded, because a
    prefix's keys sit before the prompt, so left padding would shift their relative positions.
    Cheap for the small models these methods are used with here."""
    rows = []
    for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        ids = ids[mask.bool()][None]
        new = []
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
            token = _pick(logits, temperature, top_p)
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, token.view(1, 1)], 1)
        rows.append(torch.stack(new))
    out = torch.full((len(rows), max(len(r) for r in rows)), tokenizer.pad_token_id, dtype=torch.long,
                     device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _pick(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax()
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return torch.multinomial(probs, 1)[0]


def exact_match(model, tokenizer, records: list[dict], max_new_tokens: int = 48) -> tuple[float, list[str]]:
    """Share of chat records whose last (assistant) turn is reproduced exactly by greedy decoding."""
    prompts = [r["messages"][:-1] for r in records]
    answers = [r["messages"][-1]["content"].strip() for r in records]
    got = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    hits = sum(g == a for g, a in zip(got, answers, strict=True))
    return hits / max(len(records), 1), got


@dataclass
class Sampled:
    """Sampled replies as token ids: each prompt without padding, each reply cut after its end
    (end-of-turn token or stop string, kept) or at the length limit."""

    prompt_ids: list[list[int]]
    reply_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # reached max_new_tokens without an end


def sample_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, temperature: float = 1.0,
                   top_p: float = 1.0, stop: list[str] | tuple = (), batch_size: int = 512,
                   engine: str = "generate") -> Sampled:
    """Sample one reply per prompt (repeat a prompt for a group) with the KV cache, batched:
    `generate` pads the batch and decodes it in lock step; `continuous` hands the prompts to
    transformers' continuous batching (paged KV cache, a finished reply frees its slot)."""
    if _prompt_learning(model):
        from lamina.errors import LaminaError

        raise LaminaError("sampling for training does not support prompt or prefix tuning", "method")
    if engine == "continuous":
        return _sample_continuous(model, tokenizer, prompts, max_new_tokens, temperature, top_p, stop)
    device = next(model.parameters()).device
    out = Sampled([], [], [], [])
    with inference_mode(model):
        for start in range(0, len(prompts), batch_size):
            enc = encode_prompts(tokenizer, prompts[start : start + batch_size], device)
            extra = {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **extra)
            width = enc["input_ids"].shape[1]
            for ids, mask, new in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(),
                                      gen[:, width:].tolist(), strict=True):
                reply, ended = _cut_reply(new, tokenizer, stop)
                out.prompt_ids.append([t for t, m in zip(ids, mask, strict=True) if m])
                out.reply_ids.append(reply)
                out.truncated.append(not ended)
    out.texts = [t.strip() for t in tokenizer.batch_decode(out.reply_ids, skip_special_tokens=True)]
    return out


def _sample_continuous(model, tokenizer, prompts, max_new_tokens, temperature, top_p, stop) -> Sampled:
    from transformers import GenerationConfig

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with inference_mode(model):
        got = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    # Requests are named req_<index>, in the order given.
    ordered = [got[k] for k in sorted(got, key=lambda k: int(str(k).rsplit("_", 1)[-1]))]
    out = Sampled(ids, [], [], [])
    for o in ordered:
        reply, ended = _cut_reply(list(o.generated_tokens), tokenizer, stop)
        out.reply_ids.append(reply)
        out.truncated.append(not ended)
    out.texts = [t.strip() for t in tokenizer.batch_decode(out.reply_ids, skip_special_tokens=True)]
    return out


def _cut_reply(new: list[int], tokenizer, stop) -> tuple[list[int], bool]:
    """The reply up to and including its first end token or the token completing a stop string."""
    end = new.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in new else None
    reply = new[:end] if end else new
    if stop:
        def has_stop(k: int) -> bool:
            text = tokenizer.decode(reply[:k], skip_special_tokens=True)
            return any(s in text for s in stop)

        if has_stop(len(reply)):
            lo, hi = 1, len(reply)  # the shortest prefix whose text holds a stop string: it only grows
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
            return reply[:lo], True
    return reply, end is not None
