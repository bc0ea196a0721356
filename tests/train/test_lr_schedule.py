"""Lamina's learning-rate schedule is torch's warm-up + cosine curve, step for step."""

from __future__ import annotations

import pytest
import torch

from lamina.recipe import TrainSpec
from lamina.train.optim import set_lr


@pytest.mark.parametrize(("warmup", "total", "floor"), [(5, 50, 0.1), (0, 20, 0.0), (3, 7, 0.25)])
def test_schedule_equals_torch_linear_warmup_then_cosine(warmup, total, floor):
    spec = TrainSpec(lr=3e-3, warmup_steps=warmup, min_lr_ratio=floor, steps=total)
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    sched = torch.optim.lr_scheduler
    cosine = sched.CosineAnnealingLR(theirs, T_max=total - warmup, eta_min=spec.lr * floor)
    if warmup:
        linear = sched.LinearLR(theirs, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
        reference = sched.SequentialLR(theirs, [linear, cosine], milestones=[warmup])
    else:
        reference = cosine
    for step in range(total):
        assert set_lr(ours, step, total, spec) == pytest.approx(
            theirs.param_groups[0]["lr"], rel=1e-9, abs=1e-15
        )
        theirs.step()
        reference.step()
