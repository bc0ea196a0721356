"""Exact and near-duplicate removal: a hash set for exact copies, MinHash LSH for near ones.

Memory grows with the number of kept records (one signature each, `num_perm` x 8 bytes),
not with their size, so the stream stays bounded for corpora far larger than RAM would hold
as text. First seen wins, and the stream is ordered, so the result is deterministic.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")


def _shingles(text: str, n: int) -> list[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]


class Deduper:
    def __init__(self, threshold: float, num_perm: int = 64, shingle: int = 5, seed: int = 1):
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self._seed = seed
        self._exact: set[bytes] = set()
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if threshold < 1.0 else None
        self._n = 0
        proto = MinHash(num_perm=num_perm, seed=seed)
        self._perm, self._scheme = proto.permutations, proto.scheme  # shared, built once

    def check(self, text: str) -> str | None:
        """'exact' or 'near' if `text` duplicates a kept one; else None (and `text` is kept)."""
        key = hashlib.sha256(" ".join(_WORD.findall(text.lower())).encode()).digest()
        if key in self._exact:
            return "exact"
        mh = None
        if self._lsh is not None:
            mh = MinHash(
                num_perm=self.num_perm, seed=self._seed, permutations=self._perm, scheme=self._scheme
            )
            mh.update_batch(_shingles(text, self.shingle))
            if self._lsh.query(mh):
                return "near"
        self._exact.add(key)
        if mh is not None:
            self._lsh.insert(str(self._n), mh, check_duplication=False)
        self._n += 1
        return None


def jaccard_estimate(a: str, b: str, num_perm: int = 128, shingle: int = 5) -> float:
    """MinHash estimate of two texts' shingle Jaccard (for reports and tests)."""
    ms = []
    for t in (a, b):
        m = MinHash(num_perm=num_perm)
        m.update_batch(_shingles(t, shingle))
        ms.append(m)
    return float(np.float64(ms[0].jaccard(ms[1])))
