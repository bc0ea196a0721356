"""Rows in the shapes people's datasets have, turned into Lamina's records.

Beside the native formats (data/formats.py) this reads ShareGPT (`conversations` of
`{from, value}` turns) and Alpaca (`instruction`, optional `input`, `output`), and renames
columns first when the recipe maps them (`data.columns: {prompt: question, completion: answer}`).
Whatever the shape, the result is a chat or preference record; other columns stay as metadata.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lamina.data.formats import FORMATS, Record, parse_record
from lamina.data.readers import Reference, iter_rows, reference
from lamina.errors import LaminaError
from lamina.recipe import SHAPE_FIELDS, column_errors

SHAPES: tuple[str, ...] = tuple(SHAPE_FIELDS)
# ShareGPT speakers as the datasets in the wild name them.
_SPEAKERS = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system",
}  # fmt: skip


def check_columns(fmt: str, columns: dict[str, str] | None, where: str = "data.columns") -> None:
    if fmt not in SHAPES:
        raise LaminaError(f"unknown data format {fmt!r}; expected one of {', '.join(SHAPES)}", where)
    problem = column_errors(fmt, columns)
    if problem:
        raise LaminaError(problem, where)


def _jsonable(value: Any) -> Any:
    """Metadata as JSON: Parquet and `datasets` rows may hold dates, bytes or numpy scalars."""
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return json.loads(json.dumps(value, default=str))


def _renamed(row: dict, columns: dict[str, str] | None, where: str) -> dict:
    if not columns:
        return row
    out = dict(row)
    for key, column in columns.items():
        if column not in row:
            raise LaminaError(f"no column {column!r} (named by data.columns.{key})", where)
        out[key] = out.pop(column)
    return out


def _sharegpt(row: dict, where: str) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise LaminaError("`conversations` must be a non-empty list of {from, value} turns", where)
    messages = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise LaminaError(f"conversations[{i}] needs `from` and a string `value`", where)
        role = _SPEAKERS.get(str(t.get("from", "")).lower())
        if role is None:
            raise LaminaError(
                f"conversations[{i}].from is {t.get('from')!r}; expected one of {', '.join(_SPEAKERS)}", where
            )
        messages.append({"role": role, "content": t["value"]})
    rest = {k: v for k, v in row.items() if k != "conversations"}
    return {**rest, "messages": messages}


def _alpaca(row: dict, where: str) -> dict:
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str):
            raise LaminaError(f"`{key}` must be a string", where)
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise LaminaError("`input` must be a string", where)
    prompt = row["instruction"] if not extra.strip() else f"{row['instruction']}\n\n{extra}"
    rest = {k: v for k, v in row.items() if k not in ("instruction", "input", "output")}
    return {**rest, "prompt": prompt, "completion": row["output"]}


def to_record(row: Any, fmt: str, columns: dict[str, str] | None, where: str) -> Record:
    """One row of shape `fmt` (after renaming `columns`) as a chat or preference record."""
    if not isinstance(row, dict):
        raise LaminaError(f"expected an object, got {type(row).__name__}", where)
    row = {k: _jsonable(v) for k, v in _renamed(row, columns, where).items()}
    if fmt == "sharegpt":
        return parse_record(_sharegpt(row, where), "chat", where)
    if fmt == "alpaca":
        return parse_record(_alpaca(row, where), "prompt_completion", where)
    return parse_record(row, fmt, where)


def iter_records(
    ref: Reference | str | Path, fmt: str, columns: dict[str, str] | None = None
) -> Iterator[tuple[str, Record]]:
    """(where, record) from any data reference, failing on the first bad row."""
    check_columns(fmt, columns)
    ref = ref if isinstance(ref, Reference) else reference(ref)
    for where, row in iter_rows(ref):
        yield where, to_record(row, fmt, columns, where)


def read_records(
    ref: Reference | str | Path, fmt: str, columns: dict[str, str] | None = None
) -> list[Record]:
    return [rec for _, rec in iter_records(ref, fmt, columns)]


def is_native(ref: Reference, fmt: str, columns: dict[str, str] | None) -> bool:
    """JSONL already in a native format: its bytes can be kept as they are."""
    return ref.kind == "jsonl" and fmt in FORMATS and not columns
