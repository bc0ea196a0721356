"""What the eval set's inputs look like, kept beside the report so a served version's live
inputs can be compared with them (`live.prompt_drift`).

The reference is the token count of every held-out prompt — the turns before the last
assistant answer — rendered exactly as `lamina serve` renders a chat request (the tokenizer's
chat template with the generation prompt, no extra special tokens), stored as a histogram of
exact counts: token counts take few distinct values, so this is both exact and small.
"""

from __future__ import annotations

from collections import Counter

from lamina.data.formats import Example

REFERENCE = "prompt_reference.json"


def prompt_of(record: Example) -> list[dict]:
    """The turns a caller would send: everything before the last assistant answer."""
    messages = record.messages
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return messages[:i]
    return messages


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """The prompt's length in tokens, as the server counts it."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # /v1/completions: the plain text, with the tokenizer's own special tokens
    return len(tokenizer("\n".join(m.get("content") or "" for m in messages))["input_ids"])


def reference(tokenizer, records: list[Example]) -> dict | None:
    """The eval set's prompt-length distribution, or None when it has no prompts."""
    lengths = [prompt_tokens(tokenizer, p) for p in (prompt_of(r) for r in records) if p]
    if not lengths:
        return None
    ordered = sorted(lengths)
    return {
        "unit": "prompt_tokens",
        "n": len(ordered),
        "p50": ordered[(len(ordered) - 1) // 2],
        "p95": ordered[max(0, -(-95 * len(ordered) // 100) - 1)],  # nearest rank, as live.py
        "histogram": sorted([k, v] for k, v in Counter(ordered).items()),
    }
