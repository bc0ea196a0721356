"""Finishing a withdrawal a kill interrupted, from whichever catalog command comes next.

`data forget` and `data sweep` are never undone (a withdrawal is a duty, not a wish): their
intent holds the plan, and the next `data add`, `data intake` or training intake finishes the
data side (lamina.data.intake.withdraw.finish) before its own change. The catalog lock
(lamina.data.ops) sits below the intake machinery, so these commands hand it this probe;
the import is deferred because the machinery loads Presidio, which a plain `data add`
should pay for only when there is a withdrawal to finish.
"""

from __future__ import annotations

from lamina.governance import journal


def _finish(intent: journal.Intent) -> dict:
    from lamina.data.intake.withdraw import finish

    return finish(intent)


PROBES: dict[str, journal.Probe] = {"data.forget": _finish, "data.sweep": _finish}
