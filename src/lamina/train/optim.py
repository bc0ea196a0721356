"""Optimiser and learning-rate schedule from the recipe."""

from __future__ import annotations

import math

import torch

from lamina.recipe import TrainSpec


def build_optimizer(params: list[torch.nn.Parameter], spec: TrainSpec, device: torch.device):
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The fused kernel is one launch for all parameters on CUDA; on CPU the foreach path is fastest.
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, fused=fused)


def lr_factor(step: int, total: int, spec: TrainSpec) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` (or constant).

    The curve is torch's SequentialLR(LinearLR, CosineAnnealingLR) to the step (a test holds
    them equal). It stays a function of the step rather than a scheduler object because a
    resumed run sets its rate from the step number alone: no scheduler state in Lamina's
    checkpoint format. transformers' warm-up schedules start at 0, one step behind this one."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return 1.0
    span = max(1, total - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, step: int, total: int, spec: TrainSpec) -> float:
    lr = spec.lr * lr_factor(step, total, spec)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
