"""The arithmetic of PPO for language models (Schulman et al., 2017; Ziegler et al., 2019).

Tensors are [rollouts, response tokens] with a mask that is 1 on real response tokens (the
reply up to and including its end-of-turn token) and 0 after. Every function here is pure
and small, so each can be checked against numbers worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, sum_ranks=None) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (masked entries set to 0). With
    `sum_ranks` (an in-place sum over processes) the statistics are those of every rank's entries."""
    if sum_ranks is None:
        return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps) * mask
    sums = torch.stack([(x * mask).sum(), mask.sum()])
    sum_ranks(sums)
    mean = sums[0] / sums[1].clamp(min=1)
    sq = ((x - mean) ** 2 * mask).sum().reshape(1)
    sum_ranks(sq)
    return (x - mean) * torch.rsqrt(sq[0] / sums[1].clamp(min=1) + eps) * mask


def kl_penalised_rewards(
    scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards −β·(log π − log π_ref), plus the sequence score on the last real
    token; returns (rewards, per-token KL estimate)."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards * mask, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns = advantages + values).
    The value after the last real token is 0 (the episode ends there)."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = adv * m
        # Past the end of a reply nothing flows back.
        next_value = values[:, t] * m
        next_adv = adv * m
    return advantages, (advantages + values) * mask


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss and the share of tokens where clipping was active."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ½·max((V−R)², (V_clip−R)²) and the share of clipped tokens."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_plain = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_plain, loss_clipped), mask)
    clipfrac = masked_mean((loss_clipped > loss_plain).float(), mask)
    return loss, clipfrac


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), -1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R): 1 for a perfect value function, 0 for a constant one."""
    var = masked_var(returns, mask)
    if float(var) == 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var)


@dataclass
class KLController:
    """The KL coefficient β. Adaptive (Ziegler et al.): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon),
    so β grows while the policy drifts further than the target and shrinks when it stays closer."""

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.value *= 1 + error * n_steps / self.horizon
        return self.value
