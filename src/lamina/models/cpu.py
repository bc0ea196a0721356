"""CPU settings for small models: how many threads to use, and whether bf16 is native.

A tiny model's matrices are small, so OpenMP threads that find their core taken by another
process stall every op of the step: on a shared 2-core machine two threads can be slower
than one. Torch's default is one thread per core it may run on, whatever else runs there;
here the count is the cores not already busy when the process first asks (load average),
at least one. `OMP_NUM_THREADS` or `LAMINA_CPU_THREADS`, when set, win. Load can also arrive
later: `ThreadGuard` drops to one thread when the threads stop getting their cores (measured
here at load 13 on 2 cores: a tiny-base step took 13.5 s on two threads, 0.9 s on one).
"""

from __future__ import annotations

import functools
import os
import time

import torch


def free_cores() -> int:
    """Cores this process may run on, less the load already on them (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, cores - round(busy)))


@functools.cache
def configure_threads() -> int:
    """Set torch's intra-op threads once per process; returns the count in use."""
    explicit = os.environ.get("LAMINA_CPU_THREADS")
    if explicit:
        torch.set_num_threads(max(1, int(explicit)))
    elif not os.environ.get("OMP_NUM_THREADS"):
        # Measured once, at the first CPU use: later the load counts this process's own work.
        torch.set_num_threads(free_cores())
    return torch.get_num_threads()


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there a bf16 matmul
    ran 4.6x faster than fp32 (4096 x 128 x 384, one core); elsewhere bf16 is emulated, slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class ThreadGuard:
    """Called once per training step on CPU: when the process got less than 3/4 of a core per
    thread over the last second or more, other work holds the cores, and OpenMP threads
    waiting on each other at every op cost far more than they bring: go down to one thread.
    An explicit thread setting is left alone."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.explicit = bool(os.environ.get("LAMINA_CPU_THREADS") or os.environ.get("OMP_NUM_THREADS"))

    def check(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if wall - self.wall < 1.0:
            return
        threads = torch.get_num_threads()
        if not self.explicit and threads > 1 and (cpu - self.cpu) / (wall - self.wall) < 0.75 * threads:
            torch.set_num_threads(1)
        self.wall, self.cpu = wall, cpu
