"""Where a Lamina training step's time goes: host-device syncs, per-step wall time, and a
torch.profiler table of host and device time per operator.

    python bench/profile_step.py --model qwen2.5-0.5b --tokens-per-step 32768 --micro-tokens 8192
    python bench/profile_step.py --model tiny --device cpu --tokens-per-step 4096 --steps 2   # smoke run

With --trace DIR the profiler's chrome trace is written there (gzipped).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import lamina_arguments, lamina_loop, sync  # noqa: E402
from workload import build_config, examples  # noqa: E402


def sync_sites(loop, device) -> Counter:
    """Code locations that synchronise host and device during one step (CUDA only)."""
    sites: Counter = Counter()
    if device.type != "cuda":
        return sites

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        ours = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-6:]]
        sites[" <- ".join(reversed(ours))] += 1

    shown = warnings.showwarning
    warnings.showwarning = record
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        loop.total_steps += 1
        loop.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = shown
    return sites


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    lamina_arguments(p)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--trace", default=None, help="directory for a gzipped chrome trace")
    args = p.parse_args()
    device = torch.device(args.device)
    data = examples(args.examples, build_config(args.model).vocab_size, seed=0, max_len=args.max_len)
    loop, _, _ = lamina_loop(args, data, device)
    loop.total_steps = args.warmup
    loop.run()
    sync(device)

    sites = sync_sites(loop, device)
    print(f"host-device syncs in one step: {sum(sites.values())}")
    for site, n in sites.most_common(12):
        print(f"  {n:4d}  {site}")

    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loop.total_steps += 1
        loop.run()
        sync(device)
        times.append(time.perf_counter() - t0)
    print(f"micro_tokens {loop.micro_tokens}; step seconds: " + ", ".join(f"{t:.3f}" for t in times))

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        loop.total_steps += 2
        loop.run()
        sync(device)
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=25))
    if device.type == "cuda":
        print(table.table(sort_by="self_cuda_time_total", row_limit=25))
    if args.trace:
        out = Path(args.trace)
        out.mkdir(parents=True, exist_ok=True)
        raw = out / "trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(out / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()


if __name__ == "__main__":
    main()
