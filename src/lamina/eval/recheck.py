"""`lamina eval TARGET --gates-only`: the gate verdict recomputed from stored, signed reports
against the champion production holds now, without running a suite.

The candidate's and base's numbers come from the report its evaluation wrote; the champion's
from the report written when the champion was evaluated for its own registration. Numbers
measured differently are never compared: a champion-relative check whose suite ran with
other settings or on other data in the two reports is refused, with the command that runs
the suites again. A judge check is never re-checked this way (its opponent is the champion).

TARGET is a run directory (its `eval/` is rewritten, re-signed) or a registered version
`NAME/VERSION` (the re-check goes to the workspace's `evals/` and becomes the version's
verdict in the tracking store: lamina.registry.verdicts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lamina import gates as G
from lamina import rundir, workspace
from lamina.errors import LaminaError
from lamina.eval import report
from lamina.eval.harness import REGISTRY_REF
from lamina.eval.metrics import deltas
from lamina.fsio import read_json, sha256_file
from lamina.registry import tracking, verdicts, versions

# What each suite's numbers depend on besides the model: spec settings, and `data.*` sha256s.
SUITE_INPUTS = {
    "task": ("max_items", "max_new_tokens", "mc_choices", "data.eval"),
    "safety": ("safety_per_category", "safety_seed", "max_new_tokens", "judge"),
    "privacy": ("max_items", "max_new_tokens", "mia_records", "canaries", "canary_candidates",
                "data.eval", "data.train", "data.raw_train"),  # fmt: skip
    "efficiency": ("efficiency_prompts", "max_new_tokens", "data.eval"),
}


@dataclass
class Stored:
    """A stored evaluation to re-check and where the new verdict goes."""

    eval_dir: Path
    report: dict
    gate: dict
    out_dir: Path
    champion_ref: str | None
    explicit: bool  # a champion named in the recipe must resolve
    version: tuple[str, int] | None  # the registered version re-checked, if one is
    candidate: Path  # the model directory evaluated (a registered version's own directory)


def _read(eval_dir: Path, target: str) -> tuple[dict, dict]:
    if not (eval_dir / "report.json").is_file() or not (eval_dir / "gate.json").is_file():
        raise LaminaError(f"no stored evaluation to re-check: run `lamina eval {target}` first", str(eval_dir))
    gate = read_json(eval_dir / "gate.json")
    versions.check_evaluation(eval_dir, gate)  # signed, and its verdict follows from its report
    return read_json(eval_dir / "report.json"), gate


def _registered_name(run_id: str | None) -> str | None:
    """The name a run was registered under: promotion compares with that model's production."""
    if not run_id or not versions.registry_root().is_dir():
        return None
    found = tracking.client().search_model_versions(f"tags.`lamina.run_id` = '{run_id}'")
    return min(found, key=lambda v: int(v.version)).name if found else None


def stored(target: str, out_dir: str | Path | None = None) -> Stored:
    """Find and verify the evaluation that `target` names."""
    path = Path(target)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not path.is_dir() and REGISTRY_REF.match(target):
        mv = versions.version_for(target)
        vdir, _ = versions.verify_version(mv)
        rep, gate = _read(vdir / rundir.EVAL, target)
        out = Path(out_dir) if out_dir else workspace.home() / "evals" / f"{mv.name}-v{mv.version}-gates-{stamp}"
        return Stored(vdir / rundir.EVAL, rep, gate, out, f"{mv.name}@{verdicts.CHAMPION_ALIAS}", False,
                      (mv.name, int(mv.version)), vdir.resolve())  # fmt: skip
    if not path.is_dir():
        raise LaminaError("no such run directory or registered version", target)
    eval_dir = path if (path / "report.json").is_file() else path / rundir.EVAL
    rep, gate = _read(eval_dir, target)
    spec_champion = (rep.get("spec") or {}).get("champion")
    run = (rep.get("training") or {}).get("run") or {}
    name = _registered_name((rep.get("candidate") or {}).get("run_id")) or run.get("name")
    ref = spec_champion or (f"{name}@{verdicts.CHAMPION_ALIAS}" if name else None)
    candidate = Path(str((rep.get("candidate") or {}).get("path") or eval_dir.parent)).resolve()
    return Stored(eval_dir, rep, gate, Path(out_dir) if out_dir else eval_dir, ref, bool(spec_champion), None,
                  candidate)  # fmt: skip


def _champion(s: Stored) -> tuple[dict, Path] | None:
    """({ref, name, version}, directory) of the current champion; None when there is none."""
    if not s.champion_ref:
        return None
    name = s.champion_ref.split("@")[0].split("/")[0]
    if not s.explicit and not (versions.registry_root() / name).is_dir():
        return None
    try:
        mv = versions.version_for(s.champion_ref)
    except LaminaError:
        if s.explicit:
            raise
        return None
    path, _ = versions.verify_version(mv)
    if path.resolve() == s.candidate:
        return None
    return {"ref": s.champion_ref, "name": mv.name, "version": int(mv.version)}, path


def _inputs(rep: dict, suite: str) -> dict:
    spec, data = rep.get("spec") or {}, rep.get("data") or {}
    return {k: ((data.get(k[5:]) or {}).get("sha256") if k.startswith("data.") else spec.get(k))
            for k in SUITE_INPUTS[suite]}  # fmt: skip


def _comparable(s: Stored, dependent: list[G.Gate], champ: dict, champ_report: dict) -> None:
    """Refuse when a champion-relative check would compare numbers measured differently."""
    again = f"run the suites again with `lamina eval {_target_of(s)}`"
    judged = [g.expr for g in dependent if g.suite == "judge"]
    if judged:
        raise LaminaError(f"{'; '.join(judged)} compares with the champion's answers, which no stored "
                          f"report holds: {again}", str(s.eval_dir))  # fmt: skip
    for suite in sorted({g.suite for g in dependent}):
        ours, theirs = _inputs(s.report, suite), _inputs(champ_report, suite)
        differ = [k for k in ours if ours[k] != theirs[k]]
        if differ:
            raise LaminaError(
                f"the champion {champ['name']}/{champ['version']}'s stored {suite} numbers were measured "
                f"with a different {', '.join(differ)}, so they cannot be compared with these: {again}",
                str(s.eval_dir),
            )


def _target_of(s: Stored) -> str:
    return f"{s.version[0]}/{s.version[1]}" if s.version else str(s.eval_dir.parent)


def _champion_results(s: Stored, gates: list[G.Gate]) -> tuple[dict | None, dict | None, Path | None]:
    """(champion descriptor, its numbers, its directory) for the re-check."""
    found = _champion(s)
    if found is None:
        return None, None, None
    champ, path = found
    was = s.gate.get("champion") or {}
    if (was.get("name"), was.get("version")) == (champ["name"], champ["version"]):
        return champ, (s.report.get("results") or {}).get("champion"), path  # measured beside the candidate
    dependent = [g for g in gates if g.suite == "judge" or any(r in g.rhs for r in verdicts.CHAMPION_REFERENCES)]
    if not dependent:
        return champ, None, path
    champ_report = read_json(path / rundir.EVAL / "report.json")  # inside the verified version
    _comparable(s, dependent, champ, champ_report)
    return champ, (champ_report.get("results") or {}).get("candidate"), path


def recheck(s: Stored) -> dict:
    """Recompute the verdict; write the new report, gate and page (signed) to `s.out_dir`."""
    started = time.time()
    rep = s.report
    gates = G.parse_gates((rep.get("spec") or {}).get("gates") or [], "report.json spec.gates")
    champ, champ_results, champ_path = _champion_results(s, gates)
    results = {k: v for k, v in (rep.get("results") or {}).items() if k != "champion"}
    if champ_results is not None:
        results["champion"] = champ_results
    checks = G.check_all(gates, results["candidate"], results.get("base"), champ_results)
    targets = [t for t in rep.get("targets") or [] if t.get("role") != "champion"]
    if champ_results is not None:
        targets.append({"role": "champion", "ref": champ["ref"], "path": str(champ_path)})
    candidate = {"run_id": (s.gate.get("candidate") or {}).get("run_id"), "path": str(s.candidate)}
    gate = report.gate_doc(gates, rep.get("suites") or [], candidate, champ, results["candidate"], checks)
    gate["rechecked"] = {"from": str(s.eval_dir), "gate_sha256": sha256_file(s.eval_dir / "gate.json"),
                         "suites_run": False}  # fmt: skip
    doc = {**rep, "created": gate["created"], "targets": targets, "results": results, "gate": gate,
           "deltas": {"base": deltas(results["candidate"], results.get("base")),
                      "champion": deltas(results["candidate"], results.get("champion"))},
           "seconds": round(time.time() - started, 2)}  # fmt: skip
    report.write(s.out_dir, doc)
    doc["out_dir"] = str(s.out_dir)
    return doc
