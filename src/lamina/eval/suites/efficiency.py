"""Efficiency suite: what serving and training this model costs.

Latency is measured one prompt at a time after one warm-up call (the first call pays for
lazy initialisation); tokens/s is generated tokens over the summed latencies, with tokens
counted by re-tokenising the decoded output (end-of-turn markers are not counted). Peak
memory is the accelerator's peak allocation on CUDA, else the process's peak resident set
(which includes everything the process loaded, not only this model). Training tokens and
time come from the run's run.json; GPU-hours are zero for runs on the CPU.
"""

from __future__ import annotations

import resource
import time
from datetime import datetime
from pathlib import Path

import torch

from lamina.eval import metrics as M
from lamina.eval.context import EvalContext, Target
from lamina.eval.suites import SuiteResult
from lamina.models.generate import generate


def artifact_bytes(target: Target) -> int:
    """Bytes of what this model adds on disk: a run's adapter/ or model/, else the weights."""
    root = target.path
    if target.run is not None:
        for name in ("adapter", "model"):
            if (root / name).is_dir():
                return sum(p.stat().st_size for p in (root / name).rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in Path(root).glob("*.safetensors"))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _seconds(run: dict) -> float | None:
    if run.get("train_seconds") is not None:
        return float(run["train_seconds"])
    try:
        fmt = "%Y-%m-%dT%H:%M:%S%z"
        return (
            datetime.strptime(run["finished"], fmt) - datetime.strptime(run["started"], fmt)
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def training_cost(run: dict | None) -> dict:
    if not run:
        return {"train_tokens": None, "train_seconds": None, "gpu_hours": None}
    seconds = _seconds(run)
    gpus = int(run.get("world_size") or 1) if str(run.get("device", "cpu")).startswith("cuda") else 0
    return {
        "train_tokens": run.get("tokens"),
        "train_seconds": seconds,
        "gpu_hours": None if seconds is None else seconds * gpus / 3600,
    }


def run(ctx: EvalContext, target: Target) -> SuiteResult:
    prompts = [r.messages[:-1] for r in ctx.eval_records[: ctx.spec.efficiency_prompts]]
    if not prompts:
        from lamina.eval.suites.safety_items import build_items

        prompts = [it.messages for it in build_items(ctx.spec.efficiency_prompts)][
            : ctx.spec.efficiency_prompts
        ]
    device = next(target.model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    generate(target.model, target.tokenizer, prompts[:1], ctx.spec.max_new_tokens)  # warm-up
    latencies, n_tokens = [], 0
    for p in prompts:
        t0 = time.perf_counter()
        (out,) = generate(target.model, target.tokenizer, [p], ctx.spec.max_new_tokens)
        latencies.append(time.perf_counter() - t0)
        n_tokens += len(target.tokenizer(out, add_special_tokens=False)["input_ids"])
    metrics = {
        "tokens_per_s": n_tokens / sum(latencies) if sum(latencies) > 0 else None,
        "latency_p50_s": M.percentile(latencies, 50),
        "latency_p95_s": M.percentile(latencies, 95),
        "peak_memory_mb": peak_memory_mb(device),
        "artifact_bytes": artifact_bytes(target),
        **training_cost(target.run),
    }
    notes = [f"{len(prompts)} prompts, one at a time, on {device}"]
    return SuiteResult(metrics, [], notes)
