"""Resuming an interrupted run: check the directory, then put its last checkpoint back.

The metrics logged after that checkpoint were written by the interrupted process; they are
dropped and redone, so metrics.jsonl holds each step once.
"""

from __future__ import annotations

from pathlib import Path

from lamina import rundir
from lamina.errors import LaminaError
from lamina.fsio import write_text
from lamina.train import checkpoint as ckpt
from lamina.train import distributed
from lamina.train.setup import Setup


def check_resumable(run_dir: Path) -> None:
    """A clear error unless `run_dir` is an unfinished Lamina run."""
    if not (run_dir / rundir.RUN_JSON).is_file() or not (run_dir / rundir.RECIPE).is_file():
        raise LaminaError("not a Lamina run directory (no run.json / recipe.yaml)", str(run_dir))
    if rundir.read_run(run_dir).get("status") == "completed":
        raise LaminaError("this run already completed; nothing to resume", str(run_dir))


def restore(run_dir: Path, s: Setup) -> dict:
    """Load the last checkpoint into the set-up run and trim the metrics; returns the old run.json.
    A checkpoint saved on any number of ranks loads on any number (lamina.train.distributed)."""
    meta = rundir.read_run(run_dir)
    last = ckpt.latest(run_dir)
    if last is not None:
        load = ckpt.load_checkpoint if distributed.plain(last, s.loop.dist) else distributed.load_checkpoint
        load(last, s.model, s.loop.optimizer, s.loop.sampler, s.loop.state)
    # Metrics past the checkpoint were logged by the interrupted process; they are redone.
    kept = [m for m in rundir.read_metrics(run_dir) if m["step"] <= s.loop.state.step]
    if s.loop.dist is None or s.loop.dist.main:
        write_text(run_dir / rundir.METRICS, "".join(rundir.metrics_line(m) for m in kept))
    s.loop.state.history = kept
    return meta
