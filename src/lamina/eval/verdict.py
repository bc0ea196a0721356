"""`lamina eval` as a governed action: a gate verdict is what registration trusts, so writing
one needs the `train` permission and leaves one audit entry (who, what, passed or not, the
verdict's sha256) — settled by the next evaluation writing that gate if a kill came between.
Evaluations of one candidate run one at a time, so none settles another's live intent."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lamina.fsio import read_json, sha256_bytes, sha256_file
from lamina.governance import access, journal


def _written(intent: journal.Intent) -> dict | None:
    """Applied when the gate file now differs from what was there before the evaluation."""
    path = Path(intent.details["gate"])
    if not path.is_file():
        return None
    digest = sha256_file(path)
    if digest == intent.details["before"]:
        return None
    return {"passed": (read_json(path) or {}).get("passed"), "gate_sha256": digest}


@contextlib.contextmanager
def _one_at_a_time(candidate: Path) -> Iterator[None]:
    """Exclusive among processes per evaluated directory. The lock is taken on the directory
    itself, which exists already: a refused evaluation leaves no lock file behind."""
    fd = os.open(candidate, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def evaluate(target: str, suites: list[str] | None, recipe: str | None, out_dir: str | None,
             progress: bool = True) -> dict:
    """Plan and run the evaluation (lamina.eval.harness), permission-checked and audited."""
    from lamina.eval import harness

    user = access.require("train")
    p = harness.plan(target, recipe, suites, out_dir=out_dir)
    gate = p.out_dir / "gate.json"
    domain = "eval." + sha256_bytes(str(gate.resolve()).encode())[:16]
    # Without the lock a second evaluation would settle the first one's live intent, writing
    # its entry while the first writes it too: one evaluation recorded twice.
    with _one_at_a_time(p.candidate):
        if (journal.intents_root() / domain).is_dir():
            journal.settle(domain, {"eval": _written})
        before = sha256_file(gate) if gate.is_file() else None
        with journal.operation(domain, "eval", user, _written, target=target, gate=str(gate),
                               before=before) as op:
            doc = harness.evaluate(p, progress)
            op.result.update(passed=doc["gate"]["passed"], gate_sha256=sha256_file(gate))
    return doc


def recheck(target: str, out_dir: str | None = None) -> dict:
    """`lamina eval TARGET --gates-only` (lamina.eval.recheck), permission-checked and audited
    like an evaluation; a registered version's re-check becomes its verdict for promotion."""
    from lamina.eval import recheck as R
    from lamina.registry import verdicts

    user = access.require("train")
    s = R.stored(target, out_dir)
    gate = s.out_dir / "gate.json"
    domain = "eval." + sha256_bytes(str(gate.resolve()).encode())[:16]
    # In turn with evaluations of the same model (see `evaluate`).
    with _one_at_a_time(s.candidate if s.candidate.is_dir() else s.eval_dir):
        if (journal.intents_root() / domain).is_dir():
            journal.settle(domain, {"eval": _written})
        before = sha256_file(gate) if gate.is_file() else None
        with journal.operation(domain, "eval", user, _written, target=target, gate=str(gate), before=before,
                               gates_only=True) as op:
            doc = R.recheck(s)
            if s.version is not None:
                verdicts.record_recheck(*s.version, s.out_dir, user)
            op.result.update(passed=doc["gate"]["passed"], gate_sha256=sha256_file(gate))
    return doc
