"""Recall and precision of the configured PII analyzer on labelled texts.

A gold span counts as found when a finding of the same entity type overlaps it; `masked`
counts gold spans overlapped by a finding of any type (what matters for privacy: a phone
number masked as US_SSN is still masked). A finding is correct when it overlaps a gold span
of its own type; findings of types with no gold spans count against precision too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from lamina.data.intake.pii import Finding, Masker
from lamina.data.pii_synth import LabelledText


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def wilson(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """The Wilson score interval (95 % by default) of a proportion: honest at 0 and 1, where a
    normal approximation collapses to a point (a recall of 1.000 on 40 values is not certainty)."""
    if not n:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _row(gold: int, found: int, predicted: int, correct: int, masked: int) -> dict[str, Any]:
    return {
        "gold": gold,
        "found": found,
        "recall": round(found / gold, 4) if gold else None,
        "recall_ci95": wilson(found, gold),
        "predicted": predicted,
        "correct": correct,
        "precision": round(correct / predicted, 4) if predicted else None,
        "precision_ci95": wilson(correct, predicted),
        "masked": round(masked / gold, 4) if gold else None,
    }


def score(items: list[LabelledText], predictions: list[list[Finding]]) -> dict[str, dict[str, Any]]:
    """Per-entity figures, plus `ALL` over every entity."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # gold found predicted correct masked
    for item, preds in zip(items, predictions, strict=True):
        for s, e, ent in item.spans:
            t = tally[ent]
            t[0] += 1
            t[1] += any(p.entity == ent and _overlaps((s, e), (p.start, p.end)) for p in preds)
            t[4] += any(_overlaps((s, e), (p.start, p.end)) for p in preds)
        for p in preds:
            t = tally[p.entity]
            t[2] += 1
            t[3] += any(ent == p.entity and _overlaps((s, e), (p.start, p.end)) for s, e, ent in item.spans)
    out = {ent: _row(*t) for ent, t in sorted(tally.items())}
    total = [sum(t[i] for t in tally.values()) for i in range(5)]
    out["ALL"] = _row(*total)
    return out


def evaluate(masker: Masker, items: list[LabelledText]) -> dict[str, dict[str, Any]]:
    return score(items, [masker.find(item.text) for item in items])


def report_for(spec, n: int = 1000, seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Figures for the analyzer `spec` configures on `n` generated labelled texts."""
    from lamina.data import pii_synth
    from lamina.data.intake.pii import ner_available

    masker = Masker(spec, b"\0" * 32)
    rows = evaluate(masker, pii_synth.generate(n, seed))
    ner = (
        "spaCy " + spec.ner_model
        if ner_available(spec) and {"PERSON", "LOCATION"} & set(spec.entities)
        else "none"
    )
    return rows, {
        "active": masker.entities,
        "ner": ner,
        "n": n,
        "seed": seed,
        "score_threshold": spec.score_threshold,
        "uncovered": uncovered_entities(spec, masker.entities),
    }


def uncovered_entities(spec, active: list[str]) -> list[str]:
    """Entities the recipe asks for that nothing can find (names and places without NER)."""
    return [e for e in spec.entities if e not in active] if spec.enabled else []
