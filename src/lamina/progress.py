"""Progress for long work as people watch it: a rich bar on a terminal; plain lines at a steady
interval when stderr goes to a file or a pipe, so a log shows how far a run got and when it
will end (a bar redrawn in place writes nothing useful to a file).

The interval is `LAMINA_PROGRESS_SECONDS` (default 30); 0 prints every update.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Iterator

from lamina.console import console

DEFAULT_INTERVAL_S = 30.0


def interactive() -> bool:
    """Whether progress goes to a terminal (where a live bar can be redrawn)."""
    return console.is_terminal


def interval() -> float:
    return float(os.environ.get("LAMINA_PROGRESS_SECONDS", DEFAULT_INTERVAL_S))


def clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


class Lines:
    """Progress as plain lines: `title: done/total (pct) fields, elapsed, ETA`, at most one per
    interval, and always the last."""

    def __init__(self, title: str, total: int | None, start: int = 0, every: float | None = None,
                 now: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None,
                 unit: str = ""):  # fmt: skip
        self.title, self.total, self.start, self.done, self.unit = title, total, start, start, unit
        self.every = interval() if every is None else every
        self.now, self.t0, self.last = now, now(), None
        self.write = write or (
            lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
        )
        self.fields: dict[str, str] = {}

    def line(self) -> str:
        elapsed = self.now() - self.t0
        parts = [f"{self.title}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total}"
        parts[0] += f" {self.unit}" if self.unit else ""
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts += [f"{k} {v}" for k, v in self.fields.items()]
        parts.append(f"elapsed {clock(elapsed)}")
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0:
            parts.append(f"ETA {clock((self.total - self.done) / rate)}")
        return ", ".join(parts)

    def update(self, done: int | None = None, advance: int = 0, **fields: str) -> None:
        self.done = (self.done if done is None else done) + advance
        self.fields.update({k: v for k, v in fields.items() if v is not None})
        t = self.now()
        if self.last is None or t - self.last >= self.every:
            self.last = t
            self.write(self.line())

    def close(self) -> None:
        self.write(self.line())


@contextlib.contextmanager
def task(title: str, total: int | None, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, what=None)`: a bar with ETA on a terminal, lines elsewhere."""
    if not enabled:
        yield lambda n=1, what=None: None
        return
    if not interactive():
        lines = Lines(title, total)
        yield lambda n=1, what=None: lines.update(advance=n, at=what)
        lines.close()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(f"[bold]{title}[/] {{task.description}}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task_id = bar.add_task("", total=total)
        yield lambda n=1, what=None: bar.update(task_id, advance=n, description=what or "")
