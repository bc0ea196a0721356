"""Input drift: how far the prompts a version is answering are from the eval set it passed.

The reference is what `lamina eval` stored beside its report (`eval/prompt_reference.json`:
the eval set's prompt token counts, as the server counts them), which `register` copies into
the signed version directory. The statistic is the two-sample Kolmogorov-Smirnov distance
(scipy's `ks_2samp`): the largest gap between the live and the eval set's cumulative
distributions of prompt length — 0 when they match, 1 when no live prompt is as short (or as
long) as any eval prompt. It needs no bins, reads the same at any prompt length, and comes
with a p-value: a gap of d over n live prompts is chance only if d is below about 1.36/sqrt(n)
(5 %), so a guard like `live.prompt_drift <= 0.2` wants `min_requests` of 100 or more.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.registry import versions

REFERENCE = Path("eval") / "prompt_reference.json"  # lamina.eval.inputs.REFERENCE, under the version


@functools.lru_cache(maxsize=512)
def _reference(home: str, model: str, number: int) -> dict | None:
    # A version directory never changes once registered (it is signed), so one read per process.
    try:
        path = versions.local_dir(versions.get_version(model, number)) / REFERENCE
    except LaminaError:
        return None
    if not path.is_file():
        return None  # evaluated before references were kept: drift cannot be judged
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
        return ref if ref.get("histogram") else None
    except (ValueError, AttributeError):
        return None


def reference(version: str) -> dict | None:
    """The eval-set prompt lengths of `version` ("name/N"), or None where none was kept."""
    model, _, number = version.rpartition("/")
    if not number.isdigit():
        return None
    return _reference(str(workspace.home()), model, int(number))


def statistic(lengths: list[int], ref: dict | None) -> tuple[float | None, float | None]:
    """(KS distance, p-value) of live prompt lengths against the reference histogram."""
    if not lengths or not ref:
        return None, None
    import numpy as np
    from scipy.stats import ks_2samp

    values, counts = zip(*ref["histogram"], strict=True)
    expected = np.repeat(np.asarray(values, dtype=float), np.asarray(counts, dtype=int))
    result = ks_2samp(np.asarray(lengths, dtype=float), expected)
    return float(result.statistic), float(result.pvalue)
