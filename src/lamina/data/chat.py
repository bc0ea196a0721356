"""Chat rendering and loss masks, and tokenising a dataset's chat records for SFT.

A conversation is rendered with the tokenizer's own chat template. Which characters belong
to assistant turns is found by rendering growing prefixes of the conversation — the
assistant turn i spans from the end of `render(messages[:i], add_generation_prompt=True)`
to the end of `render(messages[:i+1])` — and mapped onto tokens through the tokenizer's
offsets. No string search, so an assistant reply that repeats the prompt is still masked right.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.data.formats import Example
from lamina.errors import LaminaError


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[bool]  # True where the token carries a loss


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (end marker included)."""
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        # Rendering is most of tokenising's cost: the last turn's prefix is the full text.
        upto = full if i + 1 == len(messages) else render(tokenizer, messages[: i + 1])
        end = len(upto)
        if not full.startswith(upto):
            raise LaminaError(
                "the chat template does not render conversations prefix-stably; assistant masks cannot be "
                "derived from it (use `loss_on: all` or a different template)"
            )
        spans.append((start, end))
    return full, spans


def tokenize_chat(tokenizer, messages: list[dict], loss_on: str = "assistant") -> Tokenized:
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if loss_on == "all":
        return Tokenized(ids, [True] * len(ids))
    labels = []
    for a, b in enc["offset_mapping"]:
        # A token is labelled when it lies within an assistant span (special tokens have a
        # real character range here because the template writes them as text).
        inside = any(s <= a and b <= e and b > a for s, e in spans)
        labels.append(inside)
    return Tokenized(ids, labels)


def tokenize_text(tokenizer, text: str) -> Tokenized:
    """Plain text for language-model pretraining: every token is labelled, EOS appended."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Tokenized(ids, [True] * len(ids))


def tokenize_examples(tokenizer, records, loss_on: str, max_length: int, overlong: str, source: str
                      ) -> tuple[list[Tokenized], dict]:
    """Tokenise SFT records, truncating or dropping the overlong ones (counted)."""
    out, truncated, dropped = [], 0, 0
    source = source or "data.dataset"
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, Example):
            raise LaminaError("preference records need a preference objective (dpo); sft takes chat records", source)
        tok = render_or_refuse(tokenize_chat, tokenizer, rec.messages, loss_on, where=f"{source}: taken-in record {i}")
        if len(tok.input_ids) > max_length:
            if overlong == "drop":
                dropped += 1
                continue
            tok = Tokenized(tok.input_ids[:max_length], tok.labels[:max_length])
            truncated += 1
            if not any(tok.labels[1:]):
                dropped += 1
                continue
        out.append(tok)
    if not out:
        raise LaminaError(f"no example fits in data.max_length={max_length} ({dropped} dropped)", source)
    return out, {"examples": len(out), "truncated": truncated, "dropped": dropped}


def render_or_refuse(fn, *args, where: str):
    """`fn(*args)` — a chat template or tokenizer failing on a record is the record's (or the
    template's) problem, named as such, not a crash."""
    try:
        return fn(*args)
    except LaminaError:
        raise
    except Exception as e:
        raise LaminaError(f"the chat template or tokenizer failed on it: {type(e).__name__}: {e}", where) from None
