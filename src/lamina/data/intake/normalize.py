"""Unicode and whitespace normalisation, and the one place that knows where a record's text is."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_KEEP_FORMAT = {"\u200d"}  # zero-width joiner: part of emoji sequences
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but \t and \n


def normalize_text(text: str, form: str = "NFKC") -> str:
    """Normalise Unicode to `form`, drop invisible format characters and stray control
    characters, and tidy whitespace (one space between words, at most one blank line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():
        # ASCII is already in every normal form and has no format characters: only control
        # characters can go (the per-character walk below costs ~0.2 ms a record).
        text = _ASCII_CONTROL.sub("", text)
    else:
        text = unicodedata.normalize(form, text)
        text = "".join(
            ch
            for ch in text
            if ch in "\n\t" or ch in _KEEP_FORMAT or unicodedata.category(ch) not in ("Cc", "Cf")
        )
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def map_texts(rec: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """A copy of a canonical record (formats.record_to_json) with `fn` applied to every text."""
    out = dict(rec)
    if "messages" in rec:
        out["messages"] = [{"role": m["role"], "content": fn(m["content"])} for m in rec["messages"]]
    else:
        out["prompt"] = [{"role": m["role"], "content": fn(m["content"])} for m in rec["prompt"]]
        for key in ("chosen", "rejected", "completion"):  # preference or unpaired replies
            if key in rec:
                out[key] = fn(rec[key])
    return out


def texts(rec: dict[str, Any]) -> list[str]:
    found: list[str] = []
    map_texts(rec, lambda t: found.append(t) or t)
    return found


def full_text(rec: dict[str, Any]) -> str:
    return "\n".join(texts(rec))


def content_text(rec: dict[str, Any]) -> str:
    """The record's text without system prompts: those repeat across records by design and
    would make every record look like a duplicate of, or overlap with, every other."""
    turns = rec.get("messages") or rec.get("prompt") or []
    parts = [m["content"] for m in turns if m["role"] != "system"]
    parts += [rec[k] for k in ("chosen", "rejected", "completion") if k in rec]
    return "\n".join(parts)
