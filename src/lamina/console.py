"""Where Lamina talks to people: progress and messages on stderr, results on stdout."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
out = Console()
