"""Named kill points: where the crash-safety tests stop a command dead.

`point("register.applied")` sends SIGKILL to this process when the environment variable
LAMINA_KILL_AT names that point, so a test can prove that every step boundary of a mutating
command leaves a state the next command completes or undoes. Unset, it costs one dict lookup.
(LAMINA_CRASH_AT is the older name of the same switch.) LAMINA_HOLD_AT names a point where the
process instead waits, with the file LAMINA_HOLD_FILE present, until a test removes that file:
how a test lines two commands up at a chosen moment instead of by timing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_HOLD_LIMIT_S = 300.0  # a test that forgets to release a held process must not hang it forever


def point(name: str) -> None:
    """Die here, without cleanup, when LAMINA_KILL_AT (or LAMINA_CRASH_AT) names this point;
    wait here while LAMINA_HOLD_FILE exists when LAMINA_HOLD_AT names it."""
    if name in (os.environ.get("LAMINA_KILL_AT"), os.environ.get("LAMINA_CRASH_AT")):
        os.kill(os.getpid(), signal.SIGKILL)
    if name == os.environ.get("LAMINA_HOLD_AT") and os.environ.get("LAMINA_HOLD_FILE"):
        marker = Path(os.environ["LAMINA_HOLD_FILE"])
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + _HOLD_LIMIT_S
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
