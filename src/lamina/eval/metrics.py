"""Scoring functions shared by the suites, and the metric deltas the harness and report share:
pure Python, no model, each tested on hand-worked values.

Text metrics follow the SQuAD convention: lower-case, strip punctuation and the articles
a/an/the, split on whitespace. ROUGE-L is the F-measure of the longest common subsequence of
tokens (Lin, 2004) with beta = 1.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = text.lower()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the texts agree after stripping whitespace at the ends, else 0.0.

    Deliberately strict (no normalisation): a structured answer such as `ORDER=1; ITEM=x`
    is only right when it is byte-for-byte right.
    """
    return float(prediction.strip() == reference.strip())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def mc_correct(scores: Sequence[float], answer: int) -> float:
    """1.0 when the right choice has the strictly highest score; a tie counts as wrong,
    so a model that scores every choice the same cannot look good."""
    best = max(scores)
    return float(scores[answer] == best and sum(1 for s in scores if s == best) == 1)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default method)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count
    one half (the Mann-Whitney U statistic, normalised)."""
    if not positives or not negatives:
        return float("nan")
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    # Average ranks over ties, then U = R_pos - n_pos (n_pos + 1) / 2.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if ranked[k][1] == 1)
        i = j + 1
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def exposure_bits(canary_score: float, candidate_scores: Sequence[float]) -> float:
    """Secret Sharer exposure estimated from R sampled candidates.

    Rank is 1 + the number of candidates the model scores at least as high as the real
    canary (ties go against the canary, so a flat model gets no exposure credit); with R
    candidates plus the canary the space has R + 1 members and
    exposure = log2(R + 1) - log2(rank). The maximum, log2(R + 1), means the canary beat them all.
    """
    rank = 1 + sum(1 for s in candidate_scores if s >= canary_score)
    return math.log2(len(candidate_scores) + 1) - math.log2(rank)


def deltas(cand: dict, other: dict | None) -> dict | None:
    """candidate - other, metric by metric, where both are numbers."""
    if other is None:
        return None
    out: dict[str, dict] = {}
    for suite, values in cand.items():
        for k, v in values.items():
            w = (other.get(suite) or {}).get(k)
            if isinstance(v, int | float) and isinstance(w, int | float) and not isinstance(v, bool):
                out.setdefault(suite, {})[k] = v - w
    return out
