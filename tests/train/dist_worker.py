"""Runs under torchrun for tests/train/test_distributed.py: trains each recipe it is given,
in one set of processes (imports and the process group are paid once), and rank 0 writes
each run's logged losses to a JSON file.

`--fail-rank R --fail-step S`: rank R raises at step S (a user's bug, e.g. in an objective).
`--kill-rank R --kill-step S`: rank R SIGKILLs itself inside the checkpoint save at step S,
right after writing its shard, before the save completes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from lamina import rundir
from lamina.recipe import load_recipe
from lamina.train import distributed, runner
from lamina.train.loop import Loop


def inject(args) -> None:
    rank = int(os.environ.get("RANK", 0))
    if args.fail_rank == rank:
        step = Loop.step

        def failing(self):
            if self.state.step + 1 == args.fail_step:
                raise RuntimeError(f"injected failure on rank {rank} at step {args.fail_step} at t={time.time()}")
            return step(self)

        Loop.step = failing
    if args.kill_rank == rank:
        make = distributed._writer

        def writer(path):
            w = make(path)
            if f"step-{args.kill_step:06d}" in str(path):
                write = w.write_data

                def write_then_die(plan, planner):
                    write(plan, planner).wait()  # this rank's shard is on disk
                    os.kill(os.getpid(), signal.SIGKILL)

                w.write_data = write_then_die
            return w

        distributed._writer = writer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", type=Path, action="append", default=[])
    ap.add_argument("recipes", type=Path, nargs="*")
    ap.add_argument("--fail-rank", type=int)
    ap.add_argument("--fail-step", type=int)
    ap.add_argument("--kill-rank", type=int)
    ap.add_argument("--kill-step", type=int)
    args = ap.parse_args()
    inject(args)
    results = {}
    for path in args.recipes:
        run_dir = runner.train(load_recipe(path), progress=False)
        results[path.stem] = {"run_dir": str(run_dir), "losses": [h["loss"] for h in rundir.read_metrics(run_dir)]}
    for run_dir in args.resume:
        runner.resume(run_dir, progress=False)
        results[run_dir.name] = {"run_dir": str(run_dir), "losses": [h["loss"] for h in rundir.read_metrics(run_dir)]}
    if int(os.environ.get("RANK", 0)) == 0:
        args.out.write_text(json.dumps(results))
    sys.exit(0)


if __name__ == "__main__":
    main()
