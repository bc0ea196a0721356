"""Preference pairs for the pair objectives (DPO, reward model): tokenising and batching.

A pair is the prompt followed by the chosen reply and the prompt followed by the rejected
one, each tokenised with the chat template (labels on the reply). A micro-batch never splits
a pair: chosen and rejected go through the model in the same packed forward, and every
labelled token knows which sequence (2k = chosen of pair k, 2k+1 = its rejected) it is in,
so per-sequence log-probs are one `index_add`. Positions are precomputed on the host, so a
step needs no host-device sync.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from lamina.data.chat import Tokenized, render_or_refuse, tokenize_chat
from lamina.data.formats import Preference
from lamina.data.packing import MicroBatch, collate, group_by_budget, pack_rows, to_device
from lamina.errors import LaminaError
from lamina.recipe import DataSpec


@dataclass
class Pair:
    chosen: Tokenized
    rejected: Tokenized
    index: int  # position in the training set (keys precomputed reference log-probs)


@dataclass
class PairBatch:
    micro: MicroBatch
    loss_seq: torch.Tensor  # [n_loss] sequence of each labelled token (2k chosen, 2k+1 rejected)
    last_index: torch.Tensor  # [2 * pairs] last token of each sequence in the padded rows
    flat_last_index: torch.Tensor  # [2 * pairs] the same in the flat (varlen) layout
    pair_index: torch.Tensor  # [pairs] training-set index of each pair
    n_pairs: int
    ref_logprobs: torch.Tensor | None = None  # [n_loss] precomputed reference log-probs, if any

    @property
    def n_tokens(self) -> int:
        return self.micro.n_tokens

    def to(self, device) -> PairBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = to_device(v, device)
        moved["micro"] = self.micro.to(device)
        return PairBatch(**moved)


def _fit(tok: Tokenized, spec: DataSpec) -> Tokenized | None:
    if len(tok.input_ids) <= spec.max_length:
        return tok
    if spec.overlong == "drop":
        return None
    cut = Tokenized(tok.input_ids[: spec.max_length], tok.labels[: spec.max_length])
    return cut if any(cut.labels[1:]) else None


def tokenize_pair(tokenizer, rec: Preference, index: int = 0) -> Pair:
    chosen = tokenize_chat(tokenizer, rec.prompt + [{"role": "assistant", "content": rec.chosen}])
    rejected = tokenize_chat(tokenizer, rec.prompt + [{"role": "assistant", "content": rec.rejected}])
    return Pair(chosen, rejected, index)


def tokenize_pairs(tokenizer, records: list, spec: DataSpec, source: str | None) -> tuple[list[Pair], dict]:
    """Tokenise preference records; a pair with either side too long is truncated or dropped."""
    out, dropped, truncated = [], 0, 0
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, Preference):
            raise LaminaError(
                "this objective needs preference records {prompt, chosen, rejected}; "
                "set `data.format: preference`",
                source or "data.train",
            )
        pair = render_or_refuse(tokenize_pair, tokenizer, rec, len(out), where=f"{source or 'data.dataset'}: pair {i}")
        chosen, rejected = _fit(pair.chosen, spec), _fit(pair.rejected, spec)
        if chosen is None or rejected is None:
            dropped += 1
            continue
        truncated += (chosen is not pair.chosen) or (rejected is not pair.rejected)
        out.append(Pair(chosen, rejected, len(out)))
    if not out:
        raise LaminaError(
            f"no preference pair fits in data.max_length={spec.max_length} ({dropped} dropped)",
            source or "data.train",
        )
    return out, {"pairs": len(out), "truncated": int(truncated), "dropped": dropped}


def pair_length(pair: Pair) -> int:
    return len(pair.chosen.input_ids) + len(pair.rejected.input_ids)


def collate_pairs(pairs: list[Pair], row_len: int, refs: dict[int, torch.Tensor] | None = None) -> PairBatch:
    """Pack the sequences of these pairs into one micro-batch and index them."""
    seqs = [s for p in pairs for s in (p.chosen, p.rejected)]
    seq_of = {id(s): i for i, s in enumerate(seqs)}
    rows = pack_rows(seqs, row_len)
    micro = collate(rows, row_len)
    loss_seq: list[int] = []
    last = [0] * len(seqs)
    flat_last = [0] * len(seqs)
    ref_parts: list[torch.Tensor] = []
    flat_at = 0
    # Walk the rows in collate's order, so token k here is labelled token k there.
    for r, row in enumerate(rows):
        at = 0
        for seq in row:
            k = seq_of[id(seq)]
            n = len(seq.input_ids)
            loss_seq.extend([k] * sum(seq.labels[1:]))
            last[k], flat_last[k] = r * row_len + at + n - 1, flat_at + n - 1
            if refs is not None:
                ref_parts.append(refs[(pairs[k // 2].index, k % 2)])
            at += n
            flat_at += n
    long = torch.long
    return PairBatch(
        micro=micro,
        loss_seq=torch.tensor(loss_seq, dtype=long),
        last_index=torch.tensor(last, dtype=long),
        flat_last_index=torch.tensor(flat_last, dtype=long),
        pair_index=torch.tensor([p.index for p in pairs], dtype=long),
        n_pairs=len(pairs),
        ref_logprobs=torch.cat(ref_parts) if refs is not None else None,
    )


def group_pairs(pairs: list[Pair], micro_tokens: int) -> list[list[Pair]]:
    """Consecutive groups of whole pairs, each within the token budget (one pair at least)."""
    return group_by_budget(pairs, pair_length, micro_tokens)

