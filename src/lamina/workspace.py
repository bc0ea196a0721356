"""The workspace: the one directory where Lamina keeps its state.

`LAMINA_HOME`, or `./.lamina`. Runs, cached base models, catalogs, the registry store and
keys live below it, each in its own sub-directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The workspace directory (created on first use)."""
    path = Path(os.environ.get("LAMINA_HOME") or ".lamina").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str) -> Path:
    """A named area of the workspace, e.g. `runs`, `bases`, `catalog`."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def user() -> str:
    """The acting identity: `LAMINA_USER`, else the OS user."""
    if os.environ.get("LAMINA_USER"):
        return os.environ["LAMINA_USER"]
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
