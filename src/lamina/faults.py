"""Named kill points: where the crash-safety tests stop a command dead.

`point("register.applied")` sends SIGKILL to this process when the environment variable
LAMINA_KILL_AT names that point, so a test can prove that every step boundary of a mutating
command leaves a state the next command completes or undoes. Unset, it costs one dict lookup.
(LAMINA_CRASH_AT is the older name of the same switch.)
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here, without cleanup, when LAMINA_KILL_AT (or LAMINA_CRASH_AT) names this point."""
    if name in (os.environ.get("LAMINA_KILL_AT"), os.environ.get("LAMINA_CRASH_AT")):
        os.kill(os.getpid(), signal.SIGKILL)
