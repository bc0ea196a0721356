"""Preference losses beside DPO: ORPO and SimPO (no reference model) and KTO (unpaired data).

With ā(y) the mean log-prob of a reply's tokens and S(y) their sum, per pair (chosen c,
rejected r) or per unpaired record:

- orpo (Hong et al., 2024): −ā(c) + λ·(−log σ(log odds(c) − log odds(r))),
  log odds(y) = ā(y) − log(1 − e^{ā(y)}); the SFT term on the chosen reply comes built in.
- simpo (Meng et al., 2024): −log σ(β·ā(c) − β·ā(r) − γ); length-normalised, margin γ.
- kto (Ethayarajh et al., 2024): with r = S_π(y) − S_ref(y) and z the batch's KL estimate
  max(0, mean(S_π(y') − S_ref(y'))) on mismatched prompt/reply pairs (each prompt with the
  next record's reply, detached): λ_D·(1 − σ(β(r − z))) for a desirable reply,
  λ_U·(1 − σ(β(z − r))) for an undesirable one.

Each is summed over pairs (records) and the loop divides by the step's pairs (records), so
accumulation is exact. ORPO's SFT term is each chosen reply's mean token loss, averaged over
pairs (TRL averages over the batch's tokens instead).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lamina.data.pairs import Pair, PairBatch, collate_pairs, group_pairs, pair_length
from lamina.data.unpaired import Labelled, mismatched
from lamina.recipe import KtoSpec, OrpoSpec, SimpoSpec
from lamina.train.objectives.dpo import batch_token_logprobs, sequence_logprobs


def mean_logprobs(token_lp: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """[2 * pairs] mean log-prob per sequence (ā)."""
    sums = sequence_logprobs(token_lp, batch.loss_seq, batch.n_pairs)
    counts = sequence_logprobs(torch.ones_like(token_lp), batch.loss_seq, batch.n_pairs)
    return sums / counts.clamp(min=1)


def log_odds(mean_lp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 − p)) with p = e^ā; ā is kept just below 0 so the odds stay finite."""
    a = mean_lp.clamp(max=-1e-6)
    return a - torch.log(-torch.expm1(a))


def orpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, spec: OrpoSpec) -> torch.Tensor:
    ratio = log_odds(chosen_mean) - log_odds(rejected_mean)
    return -chosen_mean - spec.beta * F.logsigmoid(ratio)


def simpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, spec: SimpoSpec) -> torch.Tensor:
    return -F.logsigmoid(spec.beta * (chosen_mean - rejected_mean) - spec.gamma)


def kto_loss(
    policy_sum: torch.Tensor, ref_sum: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor, spec: KtoSpec
) -> torch.Tensor:
    r = policy_sum - ref_sum
    good = spec.desirable_weight * (1 - torch.sigmoid(spec.beta * (r - kl)))
    bad = spec.undesirable_weight * (1 - torch.sigmoid(spec.beta * (kl - r)))
    return torch.where(desirable, good, bad)


class _ReferenceFree:
    """A pair objective whose loss needs only the policy's log-probs."""

    length = staticmethod(pair_length)

    @staticmethod
    def count(batch: PairBatch) -> int:
        return batch.n_pairs

    @staticmethod
    def batches(pairs: list, row_len: int, micro_tokens: int) -> list[PairBatch]:
        return [collate_pairs(g, row_len) for g in group_pairs(pairs, micro_tokens)]

    def loss(self, model, batch: PairBatch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        means = mean_logprobs(batch_token_logprobs(model, batch, plan), batch)
        chosen, rejected = means[0::2], means[1::2]
        losses = self.pair_loss(chosen, rejected)
        with torch.no_grad():
            metrics = {
                "accuracy": (chosen > rejected).float().sum(),
                "chosen_mean_logp": chosen.sum(),
                "rejected_mean_logp": rejected.sum(),
            }
        return losses.sum(), metrics


class ORPO(_ReferenceFree):
    name = "orpo"

    def __init__(self, spec: OrpoSpec):
        self.spec = spec

    def pair_loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return orpo_loss(chosen, rejected, self.spec)


class SimPO(_ReferenceFree):
    name = "simpo"

    def __init__(self, spec: SimpoSpec):
        self.spec = spec

    def pair_loss(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return simpo_loss(chosen, rejected, self.spec)


# --- KTO: unpaired records (lamina.data.unpaired)


@dataclass
class KtoBatch:
    pairs: PairBatch  # sequence 2k: record k; 2k+1: record k's prompt with the next record's reply
    desirable: torch.Tensor  # [records] bool

    @property
    def n_tokens(self) -> int:
        return self.pairs.n_tokens

    def to(self, device) -> KtoBatch:
        return KtoBatch(self.pairs.to(device), self.desirable.to(device))


class KTO:
    name = "kto"

    def __init__(self, spec: KtoSpec, model):
        self.spec = spec
        self.frozen = None if hasattr(model, "disable_adapter") else copy.deepcopy(model).eval().requires_grad_(False)

    @staticmethod
    def length(x: Labelled) -> int:
        return 2 * len(x.tok.input_ids)  # the record and its mismatched twin

    @staticmethod
    def count(batch: KtoBatch) -> int:
        return batch.pairs.n_pairs

    def batches(self, records: list[Labelled], row_len: int, micro_tokens: int) -> list[KtoBatch]:
        out = []
        groups = group_pairs([Pair(x.tok, x.tok, x.index) for x in records], micro_tokens)
        at = 0
        for g in groups:
            chunk = records[at : at + len(g)]
            at += len(g)
            pairs = [Pair(x.tok, mismatched(x.tok, chunk[(k + 1) % len(chunk)].tok), x.index)
                     for k, x in enumerate(chunk)]
            longest = max(len(s.input_ids) for p in pairs for s in (p.chosen, p.rejected))
            out.append(KtoBatch(collate_pairs(pairs, max(row_len, longest)),
                                torch.tensor([x.desirable for x in chunk])))
        return out

    @contextlib.contextmanager
    def reference(self, model):
        if self.frozen is not None:
            yield self.frozen
        else:
            with model.disable_adapter():
                yield model

    def loss(self, model, batch: KtoBatch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = batch.pairs
        policy = sequence_logprobs(batch_token_logprobs(model, b, plan), b.loss_seq, b.n_pairs)
        with torch.no_grad(), self.reference(model) as ref:
            reference = sequence_logprobs(batch_token_logprobs(ref, b, plan), b.loss_seq, b.n_pairs)
        kl = (policy[1::2].detach() - reference[1::2]).mean().clamp(min=0)
        losses = kto_loss(policy[0::2], reference[0::2], kl, batch.desirable, self.spec)
        with torch.no_grad():
            r = policy[0::2] - reference[0::2]
            metrics = {"kl": kl * b.n_pairs, "reward": (self.spec.beta * r).sum(),
                       "desirable_share": batch.desirable.float().sum()}
        return losses.sum(), metrics
