"""Exact and near-duplicate removal: a hash set for exact copies, MinHash LSH for near ones.

Signatures are datasketch MinHashes and the banding (b bands of r rows) is the one
datasketch's MinHashLSH picks for the threshold. The index keeps, per band, only a set of
64-bit band hashes: a record is a near duplicate when any band matches a kept record's, as
with MinHashLSH.query, at ~0.4 KB a kept record instead of MinHashLSH's ~2 KB (it stores
keys and signatures per bucket). Memory grows with the number of kept records, never with
their size. First seen wins, and the stream is ordered, so the result is deterministic.
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
        self._bands: list[set[int]] = []
        if threshold < 1.0:
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)  # only for its (b, r) choice
            self.b, self.r = lsh.b, lsh.r
            self._bands = [set() for _ in range(self.b)]
        proto = MinHash(num_perm=num_perm, seed=seed)
        self._perm, self._scheme = proto.permutations, proto.scheme  # shared, built once

    def _band_keys(self, text: str) -> list[int]:
        mh = MinHash(num_perm=self.num_perm, seed=self._seed, permutations=self._perm, scheme=self._scheme)
        mh.update_batch(_shingles(text, self.shingle))
        hv = mh.hashvalues
        return [
            int.from_bytes(
                hashlib.blake2b(hv[i * self.r : (i + 1) * self.r].tobytes(), digest_size=8).digest(), "little"
            )
            for i in range(self.b)
        ]

    def check(self, text: str) -> str | None:
        """'exact' or 'near' if `text` duplicates a kept one; else None (and `text` is kept)."""
        key = hashlib.sha256(" ".join(_WORD.findall(text.lower())).encode()).digest()
        if key in self._exact:
            return "exact"
        keys = self._band_keys(text) if self._bands else []
        if any(k in band for k, band in zip(keys, self._bands, strict=True)):
            return "near"
        self._exact.add(key)
        for k, band in zip(keys, self._bands, strict=True):
            band.add(k)
        return None


def jaccard_estimate(a: str, b: str, num_perm: int = 128, shingle: int = 5) -> float:
    """MinHash estimate of two texts' shingle Jaccard (for reports and tests)."""
    ms = []
    for t in (a, b):
        m = MinHash(num_perm=num_perm)
        m.update_batch(_shingles(t, shingle))
        ms.append(m)
    return float(np.float64(ms[0].jaccard(ms[1])))
