"""Direct preference optimisation (Rafailov et al., 2023) and its IPO and hinge variants.

With m = [log π(y_c) − log π_ref(y_c)] − [log π(y_r) − log π_ref(y_r)] (log-probs summed over
the reply's tokens), each loss is its own function of m:

- sigmoid: −(1−ε)·log σ(βm) − ε·log σ(−βm)   (ε = label smoothing; ε = 0 is plain DPO)
- ipo:     (m − 1/(2β))²
- hinge:   max(0, 1 − βm)

The reference is the starting model: for adapter methods the same model with its adapter
switched off (no second copy in memory), for full fine-tuning a frozen copy. With
`precompute_reference` its token log-probs are computed once before training, stored with
the run (safetensors), and the frozen copy is dropped.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lamina.data.pairs import (
    PairBatch,
    collate_pairs,
    group_pairs,
    pair_length,
)
from lamina.errors import LaminaError
from lamina.recipe import DpoSpec
from lamina.train.objectives.sft import hidden_states, model_parts, token_logprobs

REFERENCE_FILE = "reference_logprobs.safetensors"


def sigmoid_loss(margin: torch.Tensor, spec: DpoSpec) -> torch.Tensor:
    z = spec.beta * margin
    eps = spec.label_smoothing
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def ipo_loss(margin: torch.Tensor, spec: DpoSpec) -> torch.Tensor:
    return (margin - 1 / (2 * spec.beta)) ** 2


def hinge_loss(margin: torch.Tensor, spec: DpoSpec) -> torch.Tensor:
    return torch.relu(1 - spec.beta * margin)


LOSSES: dict[str, Callable[[torch.Tensor, DpoSpec], torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
}


def sequence_logprobs(token_lp: torch.Tensor, loss_seq: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """[2 * pairs] summed log-probs per sequence from per-token log-probs."""
    out = torch.zeros(2 * n_pairs, dtype=token_lp.dtype, device=token_lp.device)
    return out.index_add(0, loss_seq, token_lp)


def batch_token_logprobs(model, batch: PairBatch, plan: str) -> torch.Tensor:
    """log p of every labelled token of the batch's sequences (in collate order)."""
    hidden, targets = hidden_states(model, batch.micro, plan)
    _, head = model_parts(model)
    return token_logprobs(head, hidden, targets, batch.micro.n_loss)


def dpo_terms(
    policy_tok: torch.Tensor, ref_tok: torch.Tensor, batch: PairBatch, spec: DpoSpec
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss summed over pairs, metric sums over pairs) from per-token log-probs."""
    pol = sequence_logprobs(policy_tok, batch.loss_seq, batch.n_pairs)
    ref = sequence_logprobs(ref_tok.to(pol.dtype), batch.loss_seq, batch.n_pairs)
    ratio = pol - ref
    chosen_ratio, rejected_ratio = ratio[0::2], ratio[1::2]
    margin = chosen_ratio - rejected_ratio
    losses = LOSSES[spec.loss](margin, spec)
    with torch.no_grad():
        # k3 estimator of KL(π‖π_ref) per token, summed per sequence, averaged over the pair's
        # two sequences. Evaluated on the data's replies, not on samples from π: an estimate.
        r = ref_tok.to(pol.dtype) - policy_tok.detach()
        k3 = sequence_logprobs(torch.expm1(r) - r, batch.loss_seq, batch.n_pairs)
        metrics = {
            "reward_margin": (spec.beta * margin).sum(),
            "accuracy": (margin > 0).float().sum(),
            "chosen_reward": (spec.beta * chosen_ratio).sum(),
            "rejected_reward": (spec.beta * rejected_ratio).sum(),
            "chosen_logp": pol[0::2].sum(),
            "rejected_logp": pol[1::2].sum(),
            "kl": (0.5 * (k3[0::2] + k3[1::2])).sum(),
        }
    return losses.sum(), {k: v.detach() for k, v in metrics.items()}


class DPO:
    """The DPO objective: count = pairs, so accumulation is exact over micro-batches."""

    name = "dpo"
    length = staticmethod(pair_length)

    def __init__(self, spec: DpoSpec, model, method: str):
        self.spec = spec
        # Adapter methods switch their adapter off; a full fine-tune needs its own frozen copy.
        self.frozen = None
        if not hasattr(model, "disable_adapter"):
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)
        self.refs: dict[tuple[int, int], torch.Tensor] | None = None

    @staticmethod
    def count(batch: PairBatch) -> int:
        return batch.n_pairs

    def batches(self, pairs: list, row_len: int, micro_tokens: int) -> list[PairBatch]:
        return [collate_pairs(g, row_len, self.refs) for g in group_pairs(pairs, micro_tokens)]

    @contextlib.contextmanager
    def reference(self, model):
        if self.frozen is not None:
            yield self.frozen
        else:
            with model.disable_adapter():
                yield model

    def reference_logprobs(self, model, batch: PairBatch, plan: str) -> torch.Tensor:
        with torch.no_grad(), self.reference(model) as ref:
            return batch_token_logprobs(ref, batch, plan)

    def loss(self, model, batch: PairBatch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy_tok = batch_token_logprobs(model, batch, plan)
        ref_tok = (
            batch.ref_logprobs
            if batch.ref_logprobs is not None
            else self.reference_logprobs(model, batch, plan)
        )
        return dpo_terms(policy_tok, ref_tok, batch, self.spec)

    def prepare(self, run_dir: Path, loop) -> None:
        """Precompute (or, on resume, reload) the reference log-probs when the recipe asks."""
        if not self.spec.precompute_reference:
            return
        path = Path(run_dir) / REFERENCE_FILE
        main = loop.dist is None or loop.dist.main
        if not path.is_file():  # under torchrun every rank computes (FSDP2 gathers in each forward), rank 0 writes
            micro = loop.micro_tokens
            tensors = precompute(self, loop.forward, loop.examples, loop.row_len, micro, loop.device, loop.autocast)
            if main:
                tmp = path.with_name(path.name + ".tmp")
                save_file(tensors, str(tmp))
                tmp.replace(path)
        if loop.dist:
            loop.dist.barrier()
        self.refs = load_reference(path, loop.examples)
        self.frozen = None  # no longer needed: every step reads the stored values


def precompute(
    obj: DPO, forward: Callable, pairs: list, row_len: int, micro_tokens: int, device, autocast
) -> dict[str, torch.Tensor]:
    """Reference token log-probs of every pair, as flat tensors with offsets.
    `forward(fn, batch)` runs `fn(model, batch, plan)` (lamina.train.loop.Loop.forward)."""
    per_seq: dict[tuple[int, int], torch.Tensor] = {}
    for group in group_pairs(pairs, micro_tokens):
        batch = collate_pairs(group, row_len)
        with autocast():
            tok = forward(obj.reference_logprobs, batch.to(device)).float().cpu()
        for k in range(2 * len(group)):
            per_seq[(group[k // 2].index, k % 2)] = tok[batch.loss_seq == k]
    out = {}
    for side, name in enumerate(("chosen", "rejected")):
        parts = [per_seq[(p.index, side)] for p in sorted(pairs, key=lambda p: p.index)]
        out[name] = torch.cat(parts)
        out[f"{name}_offsets"] = torch.tensor([0] + [len(t) for t in parts]).cumsum(0)
    return out


def load_reference(path: Path, pairs: list) -> dict[tuple[int, int], torch.Tensor]:
    tensors = load_file(str(path))
    refs = {}
    for side, name in enumerate(("chosen", "rejected")):
        flat, offsets = tensors[name], tensors[f"{name}_offsets"].tolist()
        if len(offsets) != len(pairs) + 1:
            raise LaminaError(
                f"holds {len(offsets) - 1} pairs; the training data has {len(pairs)}", str(path)
            )
        for p in pairs:
            seq = p.chosen if side == 0 else p.rejected
            values = flat[offsets[p.index] : offsets[p.index + 1]]
            if len(values) != sum(seq.labels[1:]):
                raise LaminaError(f"pair {p.index} does not match the training data", str(path))
            refs[(p.index, side)] = values
    return refs


@torch.no_grad()
def preference_accuracy(
    model, tokenizer, records: list, row_len: int = 512, micro_tokens: int = 8192
) -> dict:
    """On preference records: share of pairs whose chosen reply the model finds more likely
    than the rejected one (summed log-probs), and the mean log-prob margin."""
    from lamina.data.pairs import tokenize_pair

    pairs = [tokenize_pair(tokenizer, r, i) for i, r in enumerate(records)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits, margin_sum = 0, 0.0
    try:
        for group in group_pairs(pairs, micro_tokens):
            batch = collate_pairs(group, max(row_len, max(pair_length(p) for p in group))).to(device)
            seq = sequence_logprobs(
                batch_token_logprobs(model, batch, "masked"), batch.loss_seq, batch.n_pairs
            )
            diff = seq[0::2] - seq[1::2]
            hits += int((diff > 0).sum())
            margin_sum += float(diff.sum())
    finally:
        model.train(was_training)
    n = max(len(pairs), 1)
    return {"accuracy": round(hits / n, 4), "logp_margin": round(margin_sum / n, 4), "pairs": len(pairs)}
