"""Training progress: step, loss, tokens/s and ETA, as a rich bar on a terminal and as plain
lines in a log (lamina/progress.py)."""

from __future__ import annotations

import contextlib

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lamina.console import console
from lamina.progress import Lines, interactive


@contextlib.contextmanager
def training_bar(title: str, total: int, start: int = 0, enabled: bool = True):
    """Yields an update function taking (loop state, last log record or None)."""
    if not enabled:
        yield lambda state, record: None
        return
    if not interactive():  # a log file or a pipe: plain lines at a steady interval
        lines = Lines(title, total, start, unit="steps")

        def update_lines(state, record):
            fields = {}
            if record:
                fields = {"loss": f"{record['loss']:.4f}", "tokens/s": f"{record['tokens_per_s']:,.0f}"}
            lines.update(state.step, **fields)

        yield update_lines
        lines.close()
        return
    columns = [
        TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(title, total=total, completed=start, loss="-", tps="-")

        def update(state, record):
            fields = {}
            if record:
                fields = {"loss": f"{record['loss']:.4f}", "tps": f"{record['tokens_per_s']:,.0f}"}
            bar.update(task, completed=state.step, **fields)

        yield update
