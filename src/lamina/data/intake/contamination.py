"""Contamination: word n-gram overlap between training records and evaluation sets.

A training record is contaminated when at least `threshold` of its n-grams occur in some
evaluation record. N-grams are stored as 8-byte hashes; the index holds eval sets only,
which are the small side.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if not words:
        return set()
    if len(words) < n:
        return {hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()}
    return {
        hashlib.blake2b(" ".join(words[i : i + n]).encode(), digest_size=8).digest()
        for i in range(len(words) - n + 1)
    }


class EvalIndex:
    def __init__(self, n: int):
        self.n = n
        self._grams: set[bytes] = set()
        self.records = 0

    def add(self, text: str) -> None:
        self._grams |= ngrams(text, self.n)
        self.records += 1

    def overlap(self, text: str) -> float:
        grams = ngrams(text, self.n)
        if not grams:
            return 0.0
        return sum(g in self._grams for g in grams) / len(grams)
