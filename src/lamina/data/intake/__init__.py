"""Intake: raw sources -> a masked, deduplicated, versioned dataset.

The entry points are re-exported lazily: importing Presidio costs seconds, and code that only
needs the recipe models should not pay for it.
"""

from __future__ import annotations

from typing import Any


def prepare_for_training(recipe: Any, defer_commit: bool = False) -> Any:
    """See `lamina.data.intake.training.prepare_for_training`."""
    from lamina.data.intake.training import prepare_for_training as run

    return run(recipe, defer_commit)


def demo_intake(records_path: Any, eval_path: Any = None, **kw: Any) -> dict:
    """See `lamina.data.intake.planted_pii.demo_intake`."""
    from lamina.data.intake.planted_pii import demo_intake as run

    return run(records_path, eval_path, **kw)
