"""Which gate verdict governs a registered version's promotion, and whether it still holds.

A verdict is computed against a champion: the model at `<name>@production` when the suites
ran (or none). A check that names `champion` or `baseline`, or any judge check (its opponent
is the champion), holds only against that champion. Once production has moved, such a
verdict must be re-checked against the new champion before the version may replace it:
`lamina eval NAME/VERSION --gates-only` writes a signed evaluation directory outside the
immutable version and records it, with its gate's sha256, as the version's tag
`lamina.gate_recheck` in the tracking store; from then on that re-check is the verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import sha256_file
from lamina.gates import parse_gate
from lamina.registry import tracking
from lamina.registry.versions import now, read_gate

CHAMPION_ALIAS = "production"  # the alias whose model is the champion (eval's default)
RECHECK_TAG = "lamina.gate_recheck"
CHAMPION_REFERENCES = ("champion", "baseline")


def champion_dependent(gate: dict) -> list[str]:
    """The checks of a verdict whose outcome depends on which model was the champion."""
    out = []
    for c in gate.get("checks") or []:
        expr = str(c.get("expr", ""))
        g = parse_gate(expr)  # a verdict reaching here was re-parsed by read_gate already
        if g.suite == "judge" or any(r in g.rhs for r in CHAMPION_REFERENCES):
            out.append(expr)
    return out


def recorded_champion(gate: dict) -> tuple[str, int] | str | None:
    """(name, version) the verdict was computed against; a string for a champion that was
    not a registered version (it can never be the current one); None when there was none."""
    champ = gate.get("champion")
    if not isinstance(champ, dict):
        return None
    if champ.get("name") and isinstance(champ.get("version"), int):
        return str(champ["name"]), int(champ["version"])
    return str(champ.get("ref") or champ.get("path"))


def _say(champ: tuple[str, int] | str | None) -> str:
    if champ is None:
        return "no champion"
    return f"{champ[0]}/{champ[1]}" if isinstance(champ, tuple) else repr(champ)


def governing(mv, path: Path) -> tuple[Path, dict]:
    """(eval dir, verdict) that governs a version: its latest recorded re-check, else the
    evaluation registered with it. Refused unless it passed, verifies, and is of this version."""
    where = f"{mv.name}/{mv.version}"
    raw = mv.tags.get(RECHECK_TAG)
    if not raw:
        return path / "eval", read_gate(path / "eval" / "gate.json")
    try:
        record = json.loads(raw)
        eval_dir, digest = Path(record["path"]), str(record["gate_sha256"])
    except (ValueError, KeyError, TypeError):
        raise LaminaError(f"the version's {RECHECK_TAG} tag is not a re-check record", where) from None
    gate_file = eval_dir / "gate.json"
    if not gate_file.is_file():
        raise LaminaError(
            f"the gate re-check recorded for {where} is gone: run `lamina eval {where} --gates-only` again",
            str(eval_dir),
        )
    if sha256_file(gate_file) != digest:
        raise LaminaError(
            "gate.json differs from the re-check the tracking store recorded for this version", str(gate_file)
        )
    gate = read_gate(gate_file)
    evaluated = Path(str((gate.get("candidate") or {}).get("path"))).resolve()
    if evaluated != path.resolve():
        raise LaminaError(f"the re-check was of {evaluated}, not of {where}", str(gate_file))
    return eval_dir, gate


def check_champion(mv, gate: dict, alias: str, champion_now: int | None) -> None:
    """Refuse to let a version replace the champion when its verdict's relative checks were
    computed against another champion (or none), naming the command that re-checks them."""
    if alias != CHAMPION_ALIAS or champion_now == int(mv.version):
        return
    depends = champion_dependent(gate)
    expected = None if champion_now is None else (mv.name, int(champion_now))
    recorded = recorded_champion(gate)
    if not depends or recorded == expected:
        return
    ref = f"{mv.name}/{mv.version}"
    raise LaminaError(
        f"the gate was computed against {_say(recorded)}, but {mv.name}@{CHAMPION_ALIAS} is now "
        f"{_say(expected)}, and {'; '.join(depends)} holds only against the champion it was computed with: "
        f"re-check the gate with `lamina eval {ref} --gates-only` (or run the suites again with `lamina eval {ref}`)",
        ref,
    )


def record_recheck(name: str, version: int, eval_dir: Path, user: str) -> dict:
    """Make a re-check the version's verdict: its directory and gate sha256 go into the
    tracking store, which a workspace edit cannot rewrite alone."""
    gate = eval_dir / "gate.json"
    record = {"path": str(eval_dir.resolve()), "gate_sha256": sha256_file(gate), "user": user, "time": now()}
    with tracking.server_errors(f"recording the gate re-check of {name}/{version}"):
        tracking.client().set_model_version_tag(name, str(version), RECHECK_TAG, json.dumps(record))
    return record
