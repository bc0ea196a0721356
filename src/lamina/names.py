"""Names that become paths — runs, datasets, sources, registered models — are identifiers.

One rule for all of them: letters, digits, '.', '_' and '-', starting with a letter or digit.
That leaves no room for a path separator, `..`, a leading dot or a blank, so a name can
never point outside the directory it is used in.
"""

from __future__ import annotations

import re

from lamina.errors import LaminaError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit (up to 100; no '/' or '..')"


def is_name(value: object) -> bool:
    return isinstance(value, str) and bool(NAME.match(value)) and ".." not in value


def check_name(value: str, where: str) -> str:
    """`value` if it is an identifier, else a LaminaError naming `where` (a key or option)."""
    if not is_name(value):
        raise LaminaError(f"{value!r} is not a valid name: use {RULE}", where)
    return value


def to_name(text: str) -> str:
    """An identifier made from free text (e.g. a file's stem): other characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text).replace("..", "_").lstrip("._-")[:60]
    return cleaned or "data"
