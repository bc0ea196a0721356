"""Catalog changes as audited operations: one lock, one intent per change, leftovers cleared.

Every command that changes the catalog or the files beside it (`data add`, `data intake`,
training's intake, `data forget`, `data sweep`) runs under the catalog lock. The outermost
holder first settles what a killed command left: intents completed (their audit entry
written, once) or dropped, and files nothing refers to removed — `.stage-*` directories of
masked records, half-written temp files, dataset directories no version row names, and
encrypted raw snapshots no source lists (which `data forget` could otherwise not reach).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
from collections.abc import Callable, Iterator
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


PROBES: dict[str, journal.Probe] = {"data.add": _stamped, "data.intake": _stamped}


def own_stage(stage: Path) -> Any:
    """Hold a lock beside a staging directory for as long as it is in use, so that another
    command's leftover sweep can tell a live stage from one a killed command left."""
    lock = open(stage.with_name(stage.name + ".owner"), "a")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def release_stage(stage: Path, owner: Any) -> None:
    if owner is not None:
        stage.with_name(stage.name + ".owner").unlink(missing_ok=True)
        owner.close()


def _abandoned(stage: Path) -> bool:
    """A staging directory whose owner lock nobody holds (its process is gone)."""
    lock_path = stage.with_name(stage.name + ".owner")
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


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_leftovers() -> list[str]:
    """Remove files a killed command left that nothing refers to; call with the lock held."""
    home = workspace.home()
    if not catalog.db_path().exists():
        return []  # no catalog to compare with (a fresh workspace, or one lost): judge nothing
    with catalog.session() as s:
        snapshots = {Path(p).name for p in s.scalars(select(catalog.Source.snapshot))}
        versions = {Path(p).name for p in s.scalars(select(catalog.Version.path))}
    leftovers = []
    datasets = home / "datasets"
    for p in sorted(datasets.iterdir()) if datasets.is_dir() else []:
        hidden = p.name.startswith(".")
        if hidden and p.name.startswith((".lamina-stage-", ".stage-")) and p.is_dir():
            if _abandoned(p):
                leftovers.append(p)
        elif (hidden and p.name.endswith(".tmp")) or (not hidden and p.is_dir() and p.name not in versions):
            leftovers.append(p)
    raw = home / "catalog" / "raw"
    leftovers += [p for p in sorted(raw.iterdir()) if p.name not in snapshots] if raw.is_dir() else []
    for p in leftovers:
        _remove(p)
    names = [str(p.relative_to(home)) for p in leftovers]
    if names:
        audit.record("data.leftovers", removed=names)
    return names


def settle() -> list[dict]:
    """Finish or undo what killed catalog commands left; call with the lock held."""
    sweep_leftovers()
    return journal.settle(DOMAIN, PROBES)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """The catalog lock; the outermost holder settles leftovers first."""
    outermost = not journal.holding(DOMAIN)
    with journal.locked(DOMAIN):
        if outermost:
            settle()
        yield


def exclusive_call(fn: F) -> F:
    """Run `fn` under the catalog lock (see `exclusive`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with exclusive():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def operation(action: str, user: str, **details: Any) -> Iterator[journal.Intent]:
    """`with operation("data.add", user, source=name) as op: add_source(...)` — the change
    stamps the catalog in its own transaction; the audit entry follows, exactly once."""
    with exclusive(), journal.operation(DOMAIN, action, user, _stamped, **details) as op:
        yield op
