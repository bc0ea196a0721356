"""Catalog changes as audited operations: one lock, one intent per change, leftovers cleared.

Every command that changes the catalog or the files beside it (`data add`, `data intake`,
training's intake, `data forget`, `data sweep`) runs under the catalog lock. The outermost
holder first settles what a killed command left: intents completed (their audit entry
written, once) or dropped, and files nothing refers to removed — `.lamina-stage-*` directories of
masked records, half-written temp files, dataset directories no version row names, and
encrypted raw snapshots no source lists (which `data forget` could otherwise not reach).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from lamina import workspace
from lamina.data import catalog
from lamina.governance import audit, journal

DOMAIN = "catalog"
F = TypeVar("F", bound=Callable[..., Any])


def _stamped(intent: journal.Intent) -> dict | None:
    return catalog.stamped(intent.op_id)


# Withdrawals (`data.forget`, `data.sweep`) are finished with the intake machinery, which
# builds on this module: their probes come from the commands (lamina.data.intake.unfinished).
PROBES: dict[str, journal.Probe] = {"data.add": _stamped, "data.intake": _stamped}


STAGE_PREFIX = ".lamina-stage-"


@dataclass
class StageOwner:
    """The lock a live staging directory's command holds, and whether it made `datasets/`."""

    lock: Any
    made_root: bool


def new_stage() -> tuple[Path, StageOwner]:
    """A staging directory in the workspace's `datasets/` — beside the versions, so commit is a
    rename, and where the next command's leftover sweep finds it if this one is killed. The
    owner lock is taken before the directory exists, so a sweep never judges a live stage
    abandoned."""
    root = workspace.home() / "datasets"
    made_root = not root.is_dir()
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f"{STAGE_PREFIX}{uuid.uuid4().hex[:12]}"
    lock = open(stage.with_name(stage.name + ".owner"), "a")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    stage.mkdir()
    return stage, StageOwner(lock, made_root)


def release_stage(stage: Path, owner: StageOwner | None) -> None:
    """Remove a stage and its lock; a `datasets/` made only for it goes too (a refused first
    intake leaves the workspace as it was)."""
    shutil.rmtree(stage, ignore_errors=True)
    if owner is None:
        return
    stage.with_name(stage.name + ".owner").unlink(missing_ok=True)
    owner.lock.close()
    if owner.made_root:
        with contextlib.suppress(OSError):
            stage.parent.rmdir()  # only when empty: a committed version or another stage keeps it


def _abandoned(stage: Path) -> bool:
    """A staging directory (or its lone owner file) whose owner lock nobody holds: its
    process is gone."""
    lock_path = stage if stage.name.endswith(".owner") else stage.with_name(stage.name + ".owner")
    if not lock_path.exists():
        return True
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
    lock_path.unlink(missing_ok=True)
    return True


def _abandoned_stages(datasets: Path) -> list[Path]:
    if not datasets.is_dir():
        return []
    # In order: a stage's directory is judged first, and its owner file (removed with it) then skipped.
    return [p for p in sorted(datasets.iterdir())
            if p.name.startswith(STAGE_PREFIX) and p.exists() and _abandoned(p)]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_leftovers() -> list[str]:
    """Remove files a killed command left that nothing refers to; call with the lock held."""
    home = workspace.home()
    datasets = home / "datasets"
    # A stage is judged by its owner lock alone, so it is cleared even before a catalog exists
    # (a first intake killed in a new workspace).
    leftovers = _abandoned_stages(datasets)
    if catalog.db_path().exists():  # without a catalog to compare with, judge nothing else
        with catalog.session() as s:
            snapshots = {Path(p).name for p in s.scalars(select(catalog.Source.snapshot))}
            versions = {Path(p).name for p in s.scalars(select(catalog.Version.path))}
        for p in sorted(datasets.iterdir()) if datasets.is_dir() else []:
            hidden = p.name.startswith(".")
            if (hidden and p.name.endswith(".tmp")) or (not hidden and p.is_dir() and p.name not in versions):
                leftovers.append(p)
        raw = home / "catalog" / "raw"
        leftovers += [p for p in sorted(raw.iterdir()) if p.name not in snapshots] if raw.is_dir() else []
    for p in leftovers:
        _remove(p)
    names = [str(p.relative_to(home)) for p in leftovers]
    if names:
        audit.record("data.leftovers", removed=names)
    return names


def settle(probes: dict[str, journal.Probe] | None = None) -> list[dict]:
    """Finish or undo what killed catalog commands left; call with the lock held. `probes`
    replace the data layer's own for some actions (the registry's fuller withdrawal)."""
    sweep_leftovers()
    return journal.settle(DOMAIN, {**PROBES, **(probes or {})})


@contextlib.contextmanager
def exclusive(probes: dict[str, journal.Probe] | None = None) -> Iterator[list[dict]]:
    """The catalog lock; the outermost holder settles leftovers first and gets what it settled
    (a retry looks for its own interrupted operation there)."""
    outermost = not journal.holding(DOMAIN)
    with journal.locked(DOMAIN):
        yield settle(probes) if outermost else []


def exclusive_call(fn: F) -> F:
    """Run `fn` under the catalog lock (see `exclusive`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with exclusive():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def operation(action: str, user: str, probes: dict[str, journal.Probe] | None = None, key: str | None = None,
              **details: Any) -> Iterator[journal.Intent]:
    """`with operation("data.add", user, source=name) as op: add_source(...)` — the change
    stamps the catalog in its own transaction; the audit entry follows, exactly once.
    `probes`: what settles the actions this layer cannot (interrupted withdrawals); `key`: what
    a retry of the same command finds among the settled (lamina.governance.journal.args_key)."""
    with exclusive(probes), journal.operation(DOMAIN, action, user, _stamped, key, **details) as op:
        yield op
