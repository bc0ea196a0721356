"""Group-relative policy optimisation (Shao et al., 2024) and REINFORCE leave-one-out
(Kool et al., 2019; Ahmadian et al., 2024): the arithmetic, and the objective the loop runs.

Rewards come in groups: G replies sampled for the same prompt, laid out contiguously. The
advantage of a reply is its reward against a baseline made of its own group:

- grpo: A_i = (r_i − mean(r_group)) / (std(r_group) + ε)     (std: unbiased; scale optional)
- rloo: A_i = r_i − (Σ_group r − r_i) / (G − 1)               (the others' mean; = G/(G−1)·(r_i − mean))

Every completion token of a reply gets its reply's advantage. Per token, with the ratio
ρ = π(t)/π_old(t) and the reference's log-prob for the KL term (k3: e^{ref−logp} − (ref−logp) − 1,
unbiased and never negative):

    ℓ_t = −min(ρ·A, clip(ρ, 1−ε, 1+ε_high)·A) + β·k3_t

summed with a weight per token — 1 for token-level normalisation (the step divides by its
completion tokens), 1/|reply| for sequence-level (the step divides by its replies) — so
accumulation over micro-batches gives exactly the update of one large batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from lamina.data.chat import Tokenized
from lamina.data.packing import MicroBatch, collate, group_by_budget, pack_rows, to_device
from lamina.train.objectives.sft import hidden_states, model_parts, token_logprobs


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: reward minus its group's mean, divided by the group's (or batch's) std or not at all."""
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.std() + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(
    rewards: torch.Tensor, group_size: int, scale: str, eps: float = 1e-4
) -> torch.Tensor:
    """RLOO: reward minus the mean of the other G−1 rewards of its group (optionally scaled)."""
    groups = rewards.view(-1, group_size)
    baseline = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    adv = groups - baseline
    if scale == "group":
        adv = adv / (groups.std(1, keepdim=True) + eps)
    elif scale == "batch":
        adv = adv / (rewards.std() + eps)
    return adv.reshape(-1)


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from a sample of π (Schulman's k3)."""
    d = ref_logp - logp
    return torch.expm1(d) - d


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token −min(ρA, clip(ρ)A) and whether the clipped branch was taken."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


@dataclass
class Sample:
    """One sampled reply, ready for the loop: prompt + reply tokens (labels on the reply)."""

    tok: Tokenized
    advantage: float
    weight: float  # per-token weight: 1 (token-level) or 1/|reply| (sequence-level)
    old_logp: torch.Tensor | None = None  # [reply tokens]; None: the policy at the step (one step per batch)
    ref_logp: torch.Tensor | None = None  # [reply tokens]; None when there is no KL term


@dataclass
class RlBatch:
    micro: MicroBatch
    advantages: torch.Tensor  # [n_loss] each labelled token's reply advantage
    weights: torch.Tensor  # [n_loss]
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    seq: torch.Tensor  # [n_loss] which sample of the batch each labelled token belongs to
    count: float  # completion tokens (token-level) or replies (sequence-level)

    @property
    def n_tokens(self) -> int:
        return self.micro.n_tokens

    def to(self, device) -> RlBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = to_device(v, device)
        moved["micro"] = self.micro.to(device)
        return RlBatch(**moved)


def collate_samples(samples: list[Sample], row_len: int, token_level: bool) -> RlBatch:
    """Pack samples into one micro-batch; per-token fields in collate's labelled-token order."""
    index = {id(s.tok): i for i, s in enumerate(samples)}
    rows = pack_rows([s.tok for s in samples], row_len)
    micro = collate(rows, row_len)
    order = [index[id(t)] for row in rows for t in row]  # collate walks rows in this order
    seq = torch.cat([torch.full((sum(samples[i].tok.labels[1:]),), i, dtype=torch.long) for i in order])

    def per_token(get) -> torch.Tensor:
        return torch.cat([get(samples[i]) for i in order])

    def filled(value_of) -> torch.Tensor:
        return per_token(lambda s: torch.full((sum(s.tok.labels[1:]),), float(value_of(s))))

    has_old = samples[0].old_logp is not None
    has_ref = samples[0].ref_logp is not None
    return RlBatch(
        micro=micro,
        advantages=filled(lambda s: s.advantage),
        weights=filled(lambda s: s.weight),
        old_logp=per_token(lambda s: s.old_logp) if has_old else None,
        ref_logp=per_token(lambda s: s.ref_logp) if has_ref else None,
        seq=seq,
        count=float(micro.n_loss) if token_level else float(len(samples)),
    )


def group_samples(samples: list[Sample], micro_tokens: int) -> list[list[Sample]]:
    """Consecutive groups of samples within the token budget (one sample at least)."""
    return group_by_budget(samples, lambda s: len(s.tok.input_ids), micro_tokens)


def batch_logprobs(model, batch: RlBatch, plan: str) -> torch.Tensor:
    hidden, targets = hidden_states(model, batch.micro, plan)
    _, head = model_parts(model)
    return token_logprobs(head, hidden, targets, batch.micro.n_loss)


class GroupPolicyObjective:
    """GRPO or RLOO as an objective of the one loop (the advantages are already in the samples)."""

    def __init__(self, name: str, clip: float, clip_high: float | None, kl_coef: float, token_level: bool):
        self.name = name
        self.clip, self.clip_high = clip, clip_high if clip_high is not None else clip
        self.kl_coef = kl_coef
        self.token_level = token_level

    @staticmethod
    def length(sample: Sample) -> int:
        return len(sample.tok.input_ids)

    @staticmethod
    def count(batch: RlBatch) -> float:
        return batch.count

    def batches(self, samples: list[Sample], row_len: int, micro_tokens: int) -> list[RlBatch]:
        return [collate_samples(g, row_len, self.token_level) for g in group_samples(samples, micro_tokens)]

    def loss(self, model, batch: RlBatch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp = batch_logprobs(model, batch, plan)
        old = batch.old_logp if batch.old_logp is not None else logp.detach()
        per_token, clipped = clipped_surrogate(logp, old, batch.advantages, self.clip, self.clip_high)
        w = batch.weights
        metrics = {"clip_fraction": (clipped * w).sum().detach()}
        if self.kl_coef > 0 and batch.ref_logp is not None:
            kl = k3(logp, batch.ref_logp)
            per_token = per_token + self.kl_coef * kl
            metrics["kl"] = (kl * w).sum().detach()
        return (per_token * w).sum(), metrics
