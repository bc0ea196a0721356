"""The workspace: the one directory where Lamina keeps its state.

`LAMINA_HOME`, or `./.lamina`. Runs, cached base models, catalogs, the registry store and
keys live below it, each in its own sub-directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lamina.errors import LaminaError


def home() -> Path:
    """The workspace directory (created on first use)."""
    where = "LAMINA_HOME" if os.environ.get("LAMINA_HOME") else "workspace ./.lamina"
    path = Path(os.environ.get("LAMINA_HOME") or ".lamina").resolve()
    if path.exists() and not path.is_dir():
        raise LaminaError(f"{path} is a file; the workspace must be a directory", where)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaminaError(f"cannot create the workspace {path}: {e.strerror}", where) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LaminaError(f"the workspace {path} is not writable", where)
    return path


def subdir(name: str) -> Path:
    """A named area of the workspace, e.g. `runs`, `bases`, `catalog`."""
    path = home() / name
    if path.exists() and not path.is_dir():
        raise LaminaError(f"{path} is a file where the workspace keeps a directory", "LAMINA_HOME")
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


def config_dir() -> Path:
    """Lamina's per-user directory outside every workspace: `LAMINA_CONFIG_DIR`, else
    `$XDG_CONFIG_HOME/lamina`, else `~/.config/lamina`."""
    if os.environ.get("LAMINA_CONFIG_DIR"):
        return Path(os.environ["LAMINA_CONFIG_DIR"]).expanduser().resolve()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser().resolve() / "lamina"


def secrets_dir() -> Path:
    """Where this workspace's private keys and pinned trust live: outside the workspace (so
    a copy, backup or edit of the workspace carries no private key and cannot re-pin trust),
    one directory per workspace path, readable by this user only."""
    digest = hashlib.sha256(str(home()).encode()).hexdigest()[:16]
    path = config_dir() / "workspaces" / digest
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    marker = path / "workspace.txt"  # which workspace these keys belong to, for a person looking
    if not marker.exists():
        marker.write_text(f"{home()}\n")
    return path
