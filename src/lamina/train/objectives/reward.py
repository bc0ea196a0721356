"""Reward model: a scalar head on the base's last hidden state, trained with the
Bradley–Terry loss −log σ(r(chosen) − r(rejected)) on preference pairs.

The head reads the hidden state of each sequence's last token. It is attached to the model
as `reward_head`, so the optimiser and resumable checkpoints carry it like any other
trainable parameter; the run saves it as `reward_head/head.safetensors` beside the
method's artifact (adapter or model), so PPO and evaluation can load the reward model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lamina import rundir
from lamina.data.pairs import PairBatch, collate_pairs, group_pairs, pair_length, tokenize_pair
from lamina.errors import LaminaError
from lamina.fsio import atomic_dir, write_json
from lamina.models.attention import forward_inputs
from lamina.train.objectives.sft import model_parts

HEAD_DIR = "reward_head"


def new_head(model) -> torch.nn.Linear:
    hidden = model_parts(model)[0].config.hidden_size
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.weight, std=1 / (hidden + 1) ** 0.5)
    torch.nn.init.zeros_(head.bias)
    param = next(model.parameters())
    return head.to(param.device, torch.float32)


def last_hidden(model, batch: PairBatch, plan: str) -> torch.Tensor:
    """[sequences, hidden] final hidden state at each sequence's last token."""
    decoder, _ = model_parts(model)
    inputs, _ = forward_inputs(batch.micro, plan)
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    index = batch.flat_last_index if plan == "varlen" else batch.last_index
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair loss −log σ(r_c − r_r)."""
    return -F.logsigmoid(chosen - rejected)


class RewardObjective:
    """Bradley–Terry on pairs; count = pairs."""

    name = "reward"
    length = staticmethod(pair_length)

    def __init__(self, model):
        model.add_module("reward_head", new_head(model))

    @staticmethod
    def count(batch: PairBatch) -> int:
        return batch.n_pairs

    @staticmethod
    def batches(pairs: list, row_len: int, micro_tokens: int) -> list[PairBatch]:
        return [collate_pairs(g, row_len) for g in group_pairs(pairs, micro_tokens)]

    @staticmethod
    def loss(model, batch: PairBatch, plan: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        head = model.reward_head
        rewards = head(last_hidden(model, batch, plan).to(head.weight.dtype)).squeeze(-1).float()
        chosen, rejected = rewards[0::2], rewards[1::2]
        losses = bradley_terry(chosen, rejected)
        with torch.no_grad():
            metrics = {
                "accuracy": (chosen > rejected).float().sum(),
                "reward_margin": (chosen - rejected).sum(),
                "chosen_reward": chosen.sum(),
                "rejected_reward": rejected.sum(),
            }
        return losses.sum(), metrics

    @staticmethod
    def save(model, run_dir: Path) -> None:
        head = model.reward_head
        with atomic_dir(Path(run_dir) / HEAD_DIR, replace=True) as tmp:
            save_file(
                {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
                str(tmp / "head.safetensors"),
            )
            write_json(
                tmp / "head.json", {"in_features": head.in_features, "reads": "last token hidden state"}
            )


@dataclass
class RewardModel:
    """A trained reward model: the run's language model and its scalar head."""

    model: torch.nn.Module
    head: torch.nn.Linear
    tokenizer: object
    run_dir: Path

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], responses: list[str], micro_tokens: int = 8192) -> list[float]:
        """One scalar per (prompt, response), read exactly as in training."""
        from lamina.data.formats import Preference

        pairs = [
            tokenize_pair(self.tokenizer, Preference(p, r, r), i)
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
        ]
        device = self.head.weight.device
        out: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for group in group_pairs(pairs, micro_tokens):
                row_len = max(len(p.chosen.input_ids) for p in group)
                batch = collate_pairs(group, row_len).to(device)
                rewards = self.head(last_hidden(self.model, batch, "masked").float()).squeeze(-1)
                out.extend(rewards[0::2].tolist())
        finally:
            self.model.train(was_training)
        return out


def load_reward_model(run_dir: str | Path, device: torch.device | None = None) -> RewardModel:
    from lamina.methods.trained import load_model

    run_dir = Path(run_dir)
    head_file = run_dir / HEAD_DIR / "head.safetensors"
    if not head_file.is_file():
        raise LaminaError("not a reward-model run (no reward_head/head.safetensors)", str(run_dir))
    meta = rundir.read_run(run_dir)
    if meta.get("objective") != "reward":
        raise LaminaError(
            f"run objective is {meta.get('objective')!r}, not 'reward'", str(run_dir / rundir.RUN_JSON)
        )
    model, tokenizer = load_model(run_dir, device=device)
    state = load_file(str(head_file))
    head = torch.nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    head = head.to(next(model.parameters()).device).eval().requires_grad_(False)
    return RewardModel(model.eval().requires_grad_(False), head, tokenizer, run_dir)


def pair_accuracy(rm: RewardModel, records: list) -> dict:
    """Held-out pairs the reward model ranks the right way round."""
    prompts = [r.prompt for r in records]
    chosen = rm.score(prompts, [r.chosen for r in records])
    rejected = rm.score(prompts, [r.rejected for r in records])
    hits = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    margin = sum(c - r for c, r in zip(chosen, rejected, strict=True))
    n = max(len(records), 1)
    return {"pair_accuracy": round(hits / n, 4), "mean_margin": round(margin / n, 4), "pairs": len(records)}
