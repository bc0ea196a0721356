"""Log-likelihoods under a model, batched: the primitive behind multiple-choice ranking,
canary exposure and membership inference.

A sequence is token ids plus a mask of the positions whose log-probability counts; the
score is the sum of log p(token_t | tokens_<t) over masked t (t >= 1). Sequences are sorted
by length and right-padded into batches, so padding never precedes a scored token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamina.data.chat import tokenize_chat


@dataclass(frozen=True)
class Scored:
    logprob: float  # summed over scored tokens
    n_tokens: int

    @property
    def mean_nll(self) -> float:
        return -self.logprob / self.n_tokens if self.n_tokens else float("nan")


def chat_sequence(tokenizer, prompt: list[dict], completion: str) -> tuple[list[int], list[bool]]:
    """The ids of `prompt` + an assistant turn `completion`, scoring the assistant turn only."""
    tok = tokenize_chat(
        tokenizer, [*prompt, {"role": "assistant", "content": completion}], loss_on="assistant"
    )
    return tok.input_ids, tok.labels


def record_sequence(tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """A whole conversation, scoring its assistant turns (what SFT trained on)."""
    tok = tokenize_chat(tokenizer, messages, loss_on="assistant")
    return tok.input_ids, tok.labels


def text_sequence(tokenizer, text: str) -> tuple[list[int], list[bool]]:
    """Plain text, every token scored (the Secret Sharer's log-perplexity of a sequence)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, [True] * len(ids)


def score_sequences(
    model, seqs: list[tuple[list[int], list[bool]]], batch_size: int = 32, pad_id: int = 0
) -> list[Scored]:
    """Summed log-probabilities of the masked tokens of each sequence, in input order."""
    from lamina.models.generate import inference_mode

    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    results: list[Scored | None] = [None] * len(seqs)
    with inference_mode(model):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, labels = seqs[i]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attn[row, : len(seq)] = 1
                mask[row, : len(seq)] = torch.tensor(labels, dtype=torch.bool)
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
            # Prompt tuning returns logits for its virtual tokens too, in front of the input's.
            logits = logits[:, logits.shape[1] - width :]
            scored = mask[:, 1:].to(device)
            # Softmax only the scored rows: with a large vocabulary, fp32 log-probabilities of
            # every position would dwarf the model's own activations.
            rows = torch.log_softmax(logits[:, :-1][scored].float(), dim=-1)
            picked = rows.gather(-1, ids[:, 1:].to(device)[scored].unsqueeze(-1)).squeeze(-1)
            row_of = torch.arange(len(idx), device=device).unsqueeze(1).expand_as(scored)[scored]
            sums = torch.zeros(len(idx), device=device).index_add_(0, row_of, picked).tolist()
            counts = scored.sum(-1).tolist()
            for row, i in enumerate(idx):
                results[i] = Scored(float(sums[row]), int(counts[row]))
    return [r for r in results if r is not None]
