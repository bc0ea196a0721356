"""Task suite: generation metrics on held-out chat records, and multiple-choice accuracy by
log-likelihood ranking.

A record may carry its own choices (`meta.choices`, a list of strings, and `meta.answer`,
the index of the right one). Otherwise the choices are its own reference answer and
`mc_choices - 1` reference answers of other held-out records, picked by a seeded RNG: the
model is right when it gives its own answer the highest likelihood.
"""

from __future__ import annotations

import random

from lamina.eval import metrics as M
from lamina.eval.context import EvalContext, Target
from lamina.eval.scoring import chat_sequence, score_sequences
from lamina.eval.suites import SuiteResult
from lamina.models.generate import generate


def choices_for(records: list, i: int, k: int, seed: int = 0) -> tuple[list[str], int]:
    """(choices, index of the right one) for record i."""
    meta = records[i].meta or {}
    if isinstance(meta.get("choices"), list) and isinstance(meta.get("answer"), int):
        return [str(c) for c in meta["choices"]], meta["answer"]
    right = records[i].messages[-1]["content"]
    others = sorted({r.messages[-1]["content"] for r in records} - {right})
    rng = random.Random(f"mc-{seed}-{i}")
    distractors = rng.sample(others, min(k - 1, len(others)))
    choices = [right, *distractors]
    rng.shuffle(choices)
    return choices, choices.index(right)


def mc_accuracy(ctx: EvalContext, target: Target, records: list) -> float | None:
    seqs, spans, answers = [], [], []
    for i, rec in enumerate(records):
        choices, answer = choices_for(records, i, ctx.spec.mc_choices)
        if len(choices) < 2:
            continue
        start = len(seqs)
        seqs += [chat_sequence(target.tokenizer, rec.messages[:-1], c) for c in choices]
        spans.append((start, len(seqs)))
        answers.append(answer)
    if not spans:
        return None
    scores = score_sequences(target.model, seqs, ctx.spec.batch_size, target.pad_id)
    hits = [
        M.mc_correct([s.logprob for s in scores[a:b]], ans)
        for (a, b), ans in zip(spans, answers, strict=True)
    ]
    return M.mean(hits)


def run(ctx: EvalContext, target: Target) -> SuiteResult:
    records = ctx.eval_records[: ctx.spec.max_items]
    prompts = [r.messages[:-1] for r in records]
    refs = [r.messages[-1]["content"] for r in records]
    outs = generate(
        target.model, target.tokenizer, prompts, ctx.spec.max_new_tokens, batch_size=ctx.spec.batch_size
    )
    target.outputs.extend(outs)
    em = [M.exact_match(o, r) for o, r in zip(outs, refs, strict=True)]
    f1 = [M.token_f1(o, r) for o, r in zip(outs, refs, strict=True)]
    rl = [M.rouge_l(o, r) for o, r in zip(outs, refs, strict=True)]
    metrics = {
        "exact_match": M.mean(em),
        "token_f1": M.mean(f1),
        "rouge_l": M.mean(rl),
        "mc_accuracy": mc_accuracy(ctx, target, records),
        "n": len(records),
    }
    samples = [
        {"prompt": p[-1]["content"], "reference": r, "output": o, "exact_match": e}
        for p, r, o, e in list(zip(prompts, refs, outs, em, strict=True))[:8]
    ]
    notes = (
        [] if metrics["mc_accuracy"] is not None else ["multiple choice needs at least two distinct answers"]
    )
    return SuiteResult(metrics, samples, notes)
