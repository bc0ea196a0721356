"""CPU settings for small models: how many threads to use, and whether bf16 is native.

A tiny model's matrices are small, so OpenMP threads that find their core taken by another
process stall every op of the step: on a shared 2-core machine two threads can be slower
than one. Torch's default is one thread per core it may run on, whatever else runs there;
here the count is the cores not already busy when the process first asks (load average),
at least one. `OMP_NUM_THREADS` or `LAMINA_CPU_THREADS`, when set, win.
"""

from __future__ import annotations

import functools
import os

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
