"""One error type for everything a user can get wrong.

The CLI prints a LaminaError's message alone (no traceback) and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LaminaError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    `where` names the file, line or recipe key at fault; it leads the message.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def one_line(message: str) -> str:
    """A message as one line: several problems are joined with '; '."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
