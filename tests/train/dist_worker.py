"""Runs under torchrun for tests/train/test_distributed.py: trains each recipe it is given,
in one set of processes (imports and the process group are paid once), and rank 0 writes
each run's logged losses to a JSON file.

`--fail-rank R --fail-step S`: rank R raises at step S (a user's bug, e.g. in an objective).
`--ppo`: the recipes are PPO recipes (lamina.train.rlhf.train_ppo); `--whiten-check`: compare
advantage whitening over the ranks' shards with whitening of the gathered whole.
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


def brevity_reward(prompts, responses):
    """Short replies score high (a PPO reward importable as `dist_worker:brevity_reward`)."""
    return [1.0 - min(len(r.split()), 10) / 10 for r in responses]


def whiten_check() -> float:
    """Largest difference between whitening each rank's shard with global statistics and
    whitening the gathered rows in one piece."""
    import torch
    import torch.distributed as dist

    from lamina.train.objectives import ppo

    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(6, 5, generator=g), (torch.rand(6, 5, generator=g) > 0.3).float()
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * 6 // world, (rank + 1) * 6 // world)
    mine = ppo.whiten(x[rows], mask[rows], sum_ranks=dist.all_reduce)
    return float((mine - ppo.whiten(x, mask)[rows]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", type=Path, action="append", default=[])
    ap.add_argument("recipes", type=Path, nargs="*")
    ap.add_argument("--fail-rank", type=int)
    ap.add_argument("--fail-step", type=int)
    ap.add_argument("--kill-rank", type=int)
    ap.add_argument("--kill-step", type=int)
    ap.add_argument("--ppo", action="store_true")
    ap.add_argument("--whiten-check", action="store_true")
    args = ap.parse_args()
    inject(args)
    results = {}
    for path in args.recipes:
        if args.ppo:
            from lamina.train.rlhf import train_ppo

            run_dir = train_ppo(load_recipe(path), progress=False)
            results[path.stem] = {"run_dir": str(run_dir)}
            continue
        run_dir = runner.train(load_recipe(path), progress=False)
        results[path.stem] = {"run_dir": str(run_dir), "losses": [h["loss"] for h in rundir.read_metrics(run_dir)]}
    for run_dir in args.resume:
        runner.resume(run_dir, progress=False)
        results[run_dir.name] = {"run_dir": str(run_dir), "losses": [h["loss"] for h in rundir.read_metrics(run_dir)]}
    if args.whiten_check:
        results["whiten_max_diff"] = whiten_check()
    if int(os.environ.get("RANK", 0)) == 0:
        args.out.write_text(json.dumps(results))
    sys.exit(0)


if __name__ == "__main__":
    main()
