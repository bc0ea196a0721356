"""Training-data formats, parsed and validated line by line.

Four formats, all normalised to chat messages so the rest of Lamina sees one shape:
- chat: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
- prompt_completion: {"prompt": str, "completion": str}
- preference: {"prompt": str | messages, "chosen": str, "rejected": str}
- unpaired: {"prompt": str | messages, "completion": str, "label": true | false} (KTO: a reply
  marked desirable or undesirable on its own, no partner needed)

Every error names the file and line. A record may carry `subject_id` (for withdrawal), `meta`
and a `system` prompt (put before the conversation unless it opens with one); other keys are
kept in `meta`, as the columns a dataset carries beside its text (source, label, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lamina.errors import LaminaError

Format = Literal["chat", "prompt_completion", "preference", "unpaired"]
FORMATS: tuple[str, ...] = ("chat", "prompt_completion", "preference", "unpaired")
ROLES = ("system", "user", "assistant")
_COMMON_KEYS = {"subject_id", "meta", "id"}


@dataclass
class Example:
    """One SFT example as chat messages (the last turn is the assistant's)."""

    messages: list[dict[str, str]]
    subject_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Preference:
    """A prompt (as chat messages) with a preferred and a dispreferred assistant reply."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    subject_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Unpaired:
    """A prompt with one assistant reply labelled desirable (True) or undesirable (False)."""

    prompt: list[dict[str, str]]
    completion: str
    label: bool
    subject_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


Record = Example | Preference | Unpaired


def _messages(value: Any, where: str, key: str = "messages") -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise LaminaError(f"`{key}` must be a non-empty list of {{role, content}} objects", where)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise LaminaError(f"{key}[{i}] must be an object with `role` and `content`", where)
        if "role" not in m:
            raise LaminaError(f"{key}[{i}] has no `role`", where)
        if m["role"] not in ROLES:
            raise LaminaError(f"{key}[{i}].role is {m['role']!r}; expected one of {', '.join(ROLES)}", where)
        if not isinstance(m.get("content"), str):
            raise LaminaError(f"{key}[{i}] has no string `content`", where)
        extra = set(m) - {"role", "content"}
        if extra:
            raise LaminaError(f"{key}[{i}] has unknown keys {sorted(extra)}", where)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise LaminaError(f"`{key}` must be a string", where)
    if not value.strip():
        raise LaminaError(f"`{key}` is empty", where)
    return value


_FORMAT_KEYS = {"chat": {"messages"}, "prompt_completion": {"prompt", "completion"}}
_FORMAT_KEYS["preference"] = {"prompt", "chosen", "rejected"}
_FORMAT_KEYS["unpaired"] = {"prompt", "completion", "label"}


def _extra_columns(obj: dict, fmt: str) -> dict[str, Any]:
    """Keys beside the format's own: kept as metadata, not refused (a dataset's other columns)."""
    known = _FORMAT_KEYS.get(fmt, set()) | _COMMON_KEYS | {"system"}
    return {k: v for k, v in obj.items() if k not in known}


def _with_system(obj: dict, messages: list[dict[str, str]], where: str) -> list[dict[str, str]]:
    system = obj.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return messages
    if not isinstance(system, str):
        raise LaminaError("`system` must be a string", where)
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system}, *messages]


def _prompt(obj: dict, where: str) -> list[dict[str, str]]:
    """A record's `prompt`: a string (one user turn) or chat messages not ending with a reply."""
    if "prompt" not in obj:
        raise LaminaError("missing `prompt`", where)
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise LaminaError("`prompt` is empty", where)
        return [{"role": "user", "content": prompt}]
    prompt = _messages(prompt, where, "prompt")
    if prompt[-1]["role"] == "assistant":
        raise LaminaError("the prompt's last message must not be the assistant's", where)
    return prompt


def parse_record(obj: Any, fmt: str, where: str) -> Record:
    """Validate one decoded JSON value as `fmt`; `where` is `file:line` for errors."""
    if not isinstance(obj, dict):
        raise LaminaError(f"expected a JSON object, got {type(obj).__name__}", where)
    subject = obj.get("subject_id")
    if subject is not None and not isinstance(subject, str | int):
        raise LaminaError("`subject_id` must be a string or an integer", where)
    subject = None if subject is None else str(subject)
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise LaminaError("`meta` must be an object", where)
    meta = {**_extra_columns(obj, fmt), **meta}
    if fmt == "chat":
        if "messages" not in obj:
            raise LaminaError("missing `messages`", where)
        msgs = _with_system(obj, _messages(obj["messages"], where), where)
        if msgs[-1]["role"] != "assistant":
            raise LaminaError("the last message must be the assistant's", where)
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and not m["content"].strip():
                raise LaminaError(f"messages[{i}] is an empty assistant turn", where)
        return Example(msgs, subject, meta)
    if fmt == "prompt_completion":
        prompt, completion = _text(obj, "prompt", where), _text(obj, "completion", where)
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return Example(_with_system(obj, turns, where), subject, meta)
    if fmt == "preference":
        prompt = _with_system(obj, _prompt(obj, where), where)
        return Preference(prompt, _text(obj, "chosen", where), _text(obj, "rejected", where), subject, meta)
    if fmt == "unpaired":
        prompt = _with_system(obj, _prompt(obj, where), where)
        if not isinstance(obj.get("label"), bool):
            raise LaminaError("`label` must be true (desirable reply) or false (undesirable reply)", where)
        return Unpaired(prompt, _text(obj, "completion", where), obj["label"], subject, meta)
    raise LaminaError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def decode_line(raw: bytes, lineno: int, where: str) -> Any:
    """One JSONL line's value, or None for a blank line. Accepts what Windows tools write (a
    UTF-8 byte-order mark on the first line, CRLF endings); refuses text that is not UTF-8,
    including lone surrogates written as JSON escapes, which no encoder can write back."""
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise LaminaError(f"not valid UTF-8 (byte {e.start})", where) from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise LaminaError(f"malformed JSON: {e.msg} (column {e.colno})", where) from None
    if _SURROGATE_ESCAPE.search(line):  # cheap test first; pairs are fine, lone halves are not
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise LaminaError("holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair); "
                              "that is not text", where) from None
    return obj


def iter_jsonl(path: str | Path, fmt: str) -> Iterator[tuple[int, Record]]:
    """Stream (line number, record) from a JSONL file, failing on the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise LaminaError("no such data file", str(path))
    seen = False
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            obj = decode_line(raw, lineno, where)
            if obj is None:
                continue
            seen = True
            yield lineno, parse_record(obj, fmt, where)
    if not seen:
        raise LaminaError("the data file has no records", str(path))


def read_jsonl(path: str | Path, fmt: str) -> list[Record]:
    return [rec for _, rec in iter_jsonl(path, fmt)]


def record_to_json(rec: Record) -> dict[str, Any]:
    """The canonical JSON form of a record (used for hashing and writing versions)."""
    out: dict[str, Any]
    if isinstance(rec, Example):
        out = {"messages": rec.messages}
    elif isinstance(rec, Unpaired):
        out = {"prompt": rec.prompt, "completion": rec.completion, "label": rec.label}
    else:
        out = {"prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected}
    if rec.subject_id is not None:
        out["subject_id"] = rec.subject_id
    if rec.meta:
        out["meta"] = rec.meta
    return out


def format_of(rec: Record) -> str:
    if isinstance(rec, Unpaired):
        return "unpaired"
    return "chat" if isinstance(rec, Example) else "preference"
