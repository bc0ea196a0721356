"""The one training loop. Objectives plug in; everything else is the same for all of them.

Each step: the sampler hands over a token budget of examples, they are packed into
micro-batches, every micro-batch's loss sum is divided by the whole step's count (labelled
tokens for SFT), so accumulation over k micro-batches gives the same update as one batch k
times larger. No host-device sync inside a step: losses stay on the device and are read
only every `log_every` steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lamina.data.packing import StepSampler, micro_batches
from lamina.models.cpu import ThreadGuard, native_bf16
from lamina.recipe import TrainSpec
from lamina.train.optim import set_lr


@dataclass
class LoopState:
    step: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


@dataclass
class Loop:
    model: torch.nn.Module
    examples: list  # tokenized examples (lamina.data.chat.Tokenized)
    spec: TrainSpec
    objective: object
    optimizer: torch.optim.Optimizer
    sampler: StepSampler
    device: torch.device
    plan: str  # attention plan: "masked" or "varlen"
    row_len: int
    micro_tokens: int  # token budget of one forward/backward
    total_steps: int
    state: LoopState = field(default_factory=LoopState)
    on_log: Callable[[dict], None] | None = None
    on_checkpoint: Callable[[LoopState], None] | None = None
    progress: Callable[[LoopState, dict | None], None] | None = None
    # Objective metrics (sums over the step's count), accumulated on the device between logs.
    metric_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    dist: object | None = None  # lamina.train.distributed.Dist under torchrun

    def autocast(self):
        if self.device.type in ("cuda", "cpu") and self.precision() == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def precision(self) -> str:
        if self.spec.precision == "auto":
            # On a CPU with bf16 in hardware, autocast (fp32 master weights) is the faster path.
            return "bf16" if self.device.type == "cuda" or (self.device.type == "cpu" and native_bf16()) else "fp32"
        return self.spec.precision

    def step(self) -> tuple[torch.Tensor, int, int]:
        """One optimiser step; returns (loss sum on device, tokens, count)."""
        chosen = self.sampler.next_step()
        micro = self.micro_tokens
        # An objective that needs its own grouping (e.g. DPO pairs in one forward) builds its batches.
        build = getattr(self.objective, "batches", None) or micro_batches
        pack = lambda idx: build([self.examples[i] for i in idx], self.row_len, micro)  # noqa: E731
        if self.dist:  # this rank's share; count and tokens are the whole step's (lamina.train.distributed)
            batches, weights, count, tokens = self.dist.plan_step(chosen, self.sampler.lengths, pack,
                                                                  self.objective.count)
        else:
            batches = pack(chosen)
            weights, count, tokens = None, sum(self.objective.count(b) for b in batches), None
        # Ranks' gradients are averaged, so each divides by its 1/world share of the count.
        denom = max(count, 1) / (self.dist.world if self.dist else 1)
        total = torch.zeros((), device=self.device)
        # Copy every micro-batch up front (pinned, asynchronous): no wait on the GPU queue mid-step.
        batches = [b.to(self.device) for b in batches]
        for k, b in enumerate(batches):
            with self.sync(k == len(batches) - 1):
                with self.autocast():
                    loss_sum, metrics = self.forward(self.objective.loss, b)
                if weights and weights[k] != 1.0:  # a padding micro-batch of a rank with fewer
                    loss_sum, metrics = loss_sum * weights[k], {n: v * weights[k] for n, v in metrics.items()}
                (loss_sum / denom).backward()
            total += loss_sum.detach()
            for n, v in metrics.items():
                acc = self.metric_sums.get(n)
                self.metric_sums[n] = v.detach() if acc is None else acc + v.detach()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = None
        if self.spec.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.spec.grad_clip)
        set_lr(self.optimizer, self.state.step, self.total_steps, self.spec)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._last_grad_norm = grad_norm
        return total / denom, tokens if tokens is not None else sum(b.n_tokens for b in batches), count

    def forward(self, fn: Callable, batch):
        """`fn(model, batch, plan)`, through the distributed wrapper when there is one."""
        return self.dist.forward(fn, batch, self.plan) if self.dist else fn(self.model, batch, self.plan)

    def sync(self, last: bool):
        return self.dist.sync(last) if self.dist else contextlib.nullcontext()

    def run(self, max_seconds: float | None = None) -> LoopState:
        self.model.train()
        window_loss = torch.zeros((), device=self.device)
        window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
        window_count = 0
        deadline = time.perf_counter() + max_seconds if max_seconds else None
        guard = ThreadGuard() if self.device.type == "cpu" else None
        while self.state.step < self.total_steps:
            loss, tokens, count = self.step()
            if guard:
                guard.check()
            self.state.step += 1
            self.state.tokens += tokens
            self.state.loss_tokens += count
            window_loss += loss
            window_steps += 1
            window_tokens += tokens
            window_count += count
            last = self.state.step == self.total_steps
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            if self.dist and deadline is not None:  # every rank stops at the same step
                out_of_time = self.dist.any(out_of_time)
            record = None
            every = self.spec.checkpoint_every
            checkpoint = bool(self.on_checkpoint and every and self.state.step % every == 0 and not last)
            # Log at checkpoints too, so a resumed run's logging windows line up with the original's.
            if self.state.step % self.spec.log_every == 0 or last or out_of_time or checkpoint:
                # The one sync point of the loop: read the averaged loss of the window.
                if self.dist:
                    names = list(self.metric_sums)
                    window_loss, *sums = self.dist.reduce_window([window_loss, *self.metric_sums.values()])
                    self.metric_sums = dict(zip(names, sums, strict=True))
                elapsed = time.perf_counter() - window_start
                self.state.seconds += elapsed
                record = {
                    "step": self.state.step,
                    "loss": round(float(window_loss / window_steps), 6),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "tokens": self.state.tokens,
                    "tokens_per_s": round(window_tokens / max(elapsed, 1e-9), 1),
                    "seconds": round(self.state.seconds, 3),
                }
                if self._last_grad_norm is not None:
                    record["grad_norm"] = round(float(self._last_grad_norm), 6)
                for k, v in self.metric_sums.items():
                    record[k] = round(float(v / max(window_count, 1)), 6)
                self.metric_sums.clear()
                self.state.history.append(record)
                if self.on_log:
                    self.on_log(record)
                window_loss.zero_()
                window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
                window_count = 0
            if self.progress:
                self.progress(self.state, record)
            if checkpoint:
                self.on_checkpoint(self.state)
            if out_of_time:
                break
        return self.state
