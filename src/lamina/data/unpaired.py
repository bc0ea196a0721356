"""Unpaired records for KTO: tokenising, and the mismatched prompt/reply pairs its KL
estimate runs on.

A record is a prompt and one reply labelled desirable or undesirable, tokenised with the
chat template (labels on the reply). The mismatched sequence of a record is its prompt
followed by another record's reply: the same tokens, spliced where the reply's labels begin.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.data.chat import Tokenized, tokenize_chat
from lamina.data.formats import Unpaired
from lamina.errors import LaminaError
from lamina.recipe import DataSpec


@dataclass
class Labelled:
    tok: Tokenized
    desirable: bool
    index: int


def tokenize_unpaired(tokenizer, records: list, spec: DataSpec, source: str | None) -> tuple[list[Labelled], dict]:
    """Tokenise {prompt, completion, label} records; overlong ones are dropped or truncated."""
    out, dropped = [], 0
    for rec in records:
        if not isinstance(rec, Unpaired):
            raise LaminaError(
                "objective kto needs unpaired records {prompt, completion, label: true|false}; "
                "set `data.format: unpaired`", source or "data.train")
        tok = tokenize_chat(tokenizer, rec.prompt + [{"role": "assistant", "content": rec.completion}])
        if len(tok.input_ids) > spec.max_length:
            tok = Tokenized(tok.input_ids[: spec.max_length], tok.labels[: spec.max_length])
            if spec.overlong == "drop" or not any(tok.labels[1:]):
                dropped += 1
                continue
        out.append(Labelled(tok, rec.label, len(out)))
    if not out:
        raise LaminaError(f"no record fits in data.max_length={spec.max_length} ({dropped} dropped)",
                          source or "data.train")
    desirable = sum(x.desirable for x in out)
    return out, {"records": len(out), "desirable": desirable, "undesirable": len(out) - desirable,
                 "dropped": dropped}


def mismatched(a: Tokenized, b: Tokenized) -> Tokenized:
    """a's prompt followed by b's reply (labels on the reply)."""
    pa, pb = a.labels.index(1), b.labels.index(1)
    return Tokenized(a.input_ids[:pa] + b.input_ids[pb:], [0] * pa + b.labels[pb:])
