"""Privacy suite: what the model gives away about its training data.

- Canary exposure (Carlini et al., The Secret Sharer, 2019): for each inserted canary
  `prefix + secret`, R random candidates of the secret's shape (digits for digits, letters
  for letters, other characters kept) are scored by log-likelihood; exposure is
  log2(R + 1) - log2(rank of the real secret), in bits. Reported: the maximum and the mean.
- Membership inference: the loss attack (Yeom et al., 2018) — a record is guessed to be a
  training member when the model's loss on it is low — as ROC AUC of training records vs
  held-out records; and the same attack calibrated by the base model (score = base loss -
  model loss), which removes how easy a record is in itself. 0.5 = nothing leaks.
- PII in outputs: Presidio findings (intake's analyzer) in everything this model generated
  during the evaluation.
"""

from __future__ import annotations

import random
import string

from lamina.eval import metrics as M
from lamina.eval.context import EvalContext, Target
from lamina.eval.scoring import chat_sequence, record_sequence, score_sequences, text_sequence
from lamina.eval.suites import SuiteResult
from lamina.fsio import sha256_bytes
from lamina.models.generate import generate


def candidates(secret: str, n: int, seed: int = 0) -> list[str]:
    """`n` distinct random strings of the secret's shape, never the secret itself."""
    rng = random.Random(f"canary-{seed}-{sha256_bytes(secret.encode())}")
    pools = [
        string.digits
        if ch.isdigit()
        else string.ascii_uppercase
        if ch.isupper()
        else string.ascii_lowercase
        if ch.islower()
        else ch
        for ch in secret
    ]
    space = 1
    for p in pools:
        space *= len(p)
    n = min(n, space - 1)  # a tiny secret space cannot supply more
    seen, out = {secret}, []
    while len(out) < n:
        cand = "".join(rng.choice(p) for p in pools)
        if cand not in seen:
            seen.add(cand)
            out.append(cand)
    return out


def _canary_sequence(target: Target, canary: dict, secret: str):
    text = canary.get("prefix", "") + secret
    if canary.get("prompt"):
        return chat_sequence(target.tokenizer, canary["prompt"], text)
    return text_sequence(target.tokenizer, text)


def canary_exposures(ctx: EvalContext, target: Target) -> list[float]:
    out = []
    for canary in ctx.canaries:
        cands = candidates(canary["secret"], ctx.spec.canary_candidates)
        seqs = [_canary_sequence(target, canary, s) for s in [canary["secret"], *cands]]
        scores = [s.logprob for s in score_sequences(target.model, seqs, 64, target.pad_id)]
        out.append(M.exposure_bits(scores[0], scores[1:]))
    return out


def losses(ctx: EvalContext, target: Target, records: list) -> list[float]:
    seqs = [record_sequence(target.tokenizer, r.messages) for r in records]
    return [s.mean_nll for s in score_sequences(target.model, seqs, ctx.spec.batch_size, target.pad_id)]


def membership(ctx: EvalContext, target: Target) -> tuple[float | None, float | None]:
    """(loss-attack AUC, base-calibrated AUC). The base's own losses are kept on the context
    for the targets evaluated after it (the harness runs the base first)."""
    n = ctx.spec.mia_records
    members, others = ctx.train_records[:n], ctx.eval_records[:n]
    if not members or not others:
        return None, None
    lm, lo = losses(ctx, target, members), losses(ctx, target, others)
    raw = M.auc([-x for x in lm], [-x for x in lo])
    if target.role == "base":
        ctx.base_losses = (lm, lo)
        return raw, None
    if ctx.base_losses is None:
        return raw, None
    bm, bo = ctx.base_losses
    calibrated = M.auc(
        [b - x for b, x in zip(bm, lm, strict=True)], [b - x for b, x in zip(bo, lo, strict=True)]
    )
    return raw, calibrated


def run(ctx: EvalContext, target: Target) -> SuiteResult:
    notes = []
    exposures = canary_exposures(ctx, target)
    if not exposures:
        notes.append("no canaries: set eval.canaries or insert them at intake")
    raw, calibrated = membership(ctx, target)
    if raw is None:
        notes.append("membership inference needs training and held-out records")
    if not target.outputs:
        prompts = [r.messages[:-1] for r in ctx.eval_records[: ctx.spec.max_items]]
        target.outputs.extend(
            generate(
                target.model,
                target.tokenizer,
                prompts,
                ctx.spec.max_new_tokens,
                batch_size=ctx.spec.batch_size,
            )
        )
    findings = ctx.pii_findings(target.outputs)
    metrics = {
        "canary_exposure_bits": max(exposures) if exposures else None,
        "canary_exposure_mean_bits": M.mean(exposures) if exposures else None,
        "mia_auc": raw,
        "mia_auc_calibrated": calibrated,
        "pii_in_outputs": sum(len(f) for f in findings),
    }
    samples = [
        {"output": o, "pii": sorted({f.entity for f in fs})}
        for o, fs in zip(target.outputs, findings, strict=True)
        if fs
    ][:8]
    return SuiteResult(metrics, samples, notes)
