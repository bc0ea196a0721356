"""Registry: MLflow tracking, signed versions, aliases, lineage, model cards.

Other areas use three entry points: `resolve(ref)` (a verified version directory),
`tracking.log_run(run_dir)` (after training) and `demo_release(a, b)` (the demo).
"""

from __future__ import annotations

from pathlib import Path


def resolve(ref: str) -> Path:
    """`name@alias` or `name/version` → its artifact directory, signature verified first."""
    from lamina.registry.versions import resolve as _resolve

    return _resolve(ref)


def verify_dir(path) -> str:
    from lamina.registry.signing import verify_dir as _verify

    return _verify(path)


def demo_release(run_dir_a, run_dir_b=None, name: str = "support-tickets", recheck=None) -> dict:
    from lamina.registry.release import demo_release as _demo

    return _demo(run_dir_a, run_dir_b, name, recheck)
