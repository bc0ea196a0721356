"""Normalise and mask record batches, in worker processes, in order, in bounded memory.

`multiprocessing.Pool.imap` would drain its input iterator as fast as it can (holding the
whole corpus in memory); here at most `2 x workers` batches are in flight at a time.
Each worker builds its Presidio engines once, in its initializer.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from lamina.data.intake.normalize import map_texts, normalize_text
from lamina.recipe import IntakeSpec

_STATE: dict[str, Any] = {}


def _skip_heavy_imports() -> None:
    """Presidio imports transformers (and so torch) for an NLP engine we never use: 8 s of a
    worker's start-up on these machines, against about 1 s without. Both are optional to
    Presidio (it catches the ImportError), so a fresh worker process marks them absent."""
    for name in ("transformers", "torch"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def init_worker(spec_json: str, hmac_key: bytes, subprocess: bool = False) -> None:
    if _STATE.get("built_for") == (spec_json, hmac_key):
        return  # in-process runs reuse the engines of the last run with the same settings
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    if subprocess:
        _skip_heavy_imports()
    from lamina.data.intake.pii import Masker

    spec = IntakeSpec.model_validate_json(spec_json)
    _STATE["spec"] = spec
    _STATE["masker"] = Masker(spec.pii, hmac_key) if spec.pii.enabled else None
    _STATE["built_for"] = (spec_json, hmac_key)


def process_batch(batch: list[tuple[Any, dict]]) -> list[tuple[Any, dict, dict[str, int], bool]]:
    """Each (tag, record) -> (tag, normalised and masked record, findings per entity, changed by
    normalising). The tag travels through untouched."""
    spec: IntakeSpec = _STATE["spec"]
    masker = _STATE["masker"]  # a pii.Masker, or None when masking is off
    out = []
    for tag, rec in batch:
        norm = map_texts(rec, lambda t: normalize_text(t, spec.unicode_form))
        found: Counter = Counter()
        if masker is not None:

            def mask(text: str, found: Counter = found) -> str:
                masked, findings = masker.mask(text)
                found.update(f.entity for f in findings)
                return masked

            masked = map_texts(norm, mask)
        else:
            masked = norm
        out.append((tag, masked, dict(found), norm != rec))
    return out


# Starting a worker costs about a CPU-second (imports, engines); below this many records per
# worker the job is faster in-process.
MIN_RECORDS_PER_WORKER = 2000


def worker_count(spec: IntakeSpec, records: int | None = None) -> int:
    """Explicit `workers` as given; the default (0) is one per core, fewer for small jobs."""
    if spec.workers:
        return spec.workers
    cores = os.cpu_count() or 1
    if records is None:
        return cores
    return max(1, min(cores, records // MIN_RECORDS_PER_WORKER))


def ordered_map(
    fn: Callable[[list], Any],
    batches: Iterable[list],
    workers: int,
    initargs: tuple,
    inflight: int | None = None,
) -> Iterator[Any]:
    """`map(fn, batches)` over `workers` processes, results in input order, bounded look-ahead."""
    if workers <= 1:
        init_worker(*initargs)
        for batch in batches:
            yield fn(batch)
        return
    inflight = inflight or 2 * workers
    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch's or sqlite's state
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(*initargs, True)
    ) as pool:
        pending: deque[Future] = deque()
        for batch in batches:
            pending.append(pool.submit(fn, batch))
            if len(pending) >= inflight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def batched(items: Iterable[Any], size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
