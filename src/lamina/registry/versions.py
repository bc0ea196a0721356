"""Registered versions: a gated run becomes a signed, carded, immutable directory plus an
MLflow model version that points at it.

Crash safety comes from ordering. The version directory is built in a temp sibling, signed,
and renamed into place; only then is the MLflow version created — in one store transaction
together with its lineage tags. A crash before that leaves at most an unreferenced directory
(nothing resolves to it), never a version without its files or tags.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from lamina import faults, rundir, workspace
from lamina.errors import LaminaError
from lamina.fsio import atomic_dir, read_json, sha256_file, sha256_json, write_json, write_text
from lamina.governance import access, at_rest, audit, journal
from lamina.recipe import RegistrySpec
from lamina.registry import model_card, ops, signing, tracking
from lamina.registry.anchor import anchor
from lamina.registry.moves import alias_problem

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z][\w-]*)|/(?P<version>\d+))$")
ARTIFACTS = ("adapter", "model")
COPIED_FILES = (rundir.RUN_JSON, rundir.RECIPE, rundir.METRICS, rundir.LOSS_PLOT)


crashpoint = faults.point  # the step boundaries of register/promote that the crash tests kill at


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def registry_root() -> Path:
    return workspace.subdir("registry")


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise LaminaError("a model name is letters, digits, '.', '_' or '-' (up to 100)", f"name {name!r}")
    return name


@contextlib.contextmanager
def model_lock(name: str) -> Iterator[None]:
    # Serialises register/promote/rollback of one model among processes on this machine.
    lock_path = registry_root() / name / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        yield


def read_gate(path: Path) -> dict:
    """The gate verdict the evaluation wrote; refuses unless it passed, naming the failed checks."""
    if not path.is_file():
        raise LaminaError(
            "no gate result (run `lamina eval`): nothing is registered without a passing gate", str(path)
        )
    try:
        gate = read_json(path)
    except ValueError as e:
        raise LaminaError(f"not valid JSON: {e}", str(path)) from None
    if not isinstance(gate, dict) or gate.get("passed") is not True:
        checks = gate.get("checks", []) if isinstance(gate, dict) else []
        failed = [
            str(c.get("expr") or c.get("name") or c.get("rule") or c)
            for c in checks
            if isinstance(c, dict) and not c.get("passed")
        ]
        access.refused("gate", f"the gate did not pass: {', '.join(failed) or 'unknown'}", gate=str(path))
        raise LaminaError(f"the gate did not pass (failed: {', '.join(failed) or 'unknown'})", str(path))
    check_evaluation(path.parent, gate)
    return gate


def check_evaluation(eval_dir: Path, gate: dict) -> None:
    """The verdict is the one the evaluation wrote: its directory's signature holds (an edited
    gate.json or report.json is named), and the report's numbers reproduce every check."""
    from lamina.gates import recheck

    if not (eval_dir / signing.SIGNATURE).is_file():
        raise LaminaError(
            "the evaluation is not signed, so its verdict cannot be trusted: run `lamina eval` again",
            str(eval_dir),
        )
    signing.verify_dir(eval_dir)
    report = eval_dir / "report.json"
    if not report.is_file():
        raise LaminaError("no report.json beside the gate verdict: run `lamina eval` again", str(eval_dir))
    wrong = recheck(gate, (read_json(report) or {}).get("results") or {})
    if wrong:
        raise LaminaError(f"gate.json disagrees with report.json: {'; '.join(wrong)}", str(eval_dir / "gate.json"))


def check_gate_is_for(run_dir: Path, run: dict) -> None:
    """A gate copied in from another run's evaluation is not this run's gate."""
    report = run_dir / rundir.EVAL / "report.json"
    if report.is_file():
        evaluated = ((read_json(report) or {}).get("candidate") or {}).get("run_id")
        if evaluated and evaluated != run.get("id"):
            raise LaminaError(f"the evaluation was of run {evaluated!r}, not {run.get('id')!r}", str(report))


def artifact_kind(run_dir: Path) -> str:
    for kind in ARTIFACTS:
        if (run_dir / kind).is_dir():
            return kind
    raise LaminaError("run has neither adapter/ nor model/ (did it finish?)", str(run_dir))


def version_of_dir(path: Path) -> dict | None:
    """{name, version} of the registered version stored at `path`, if it is one."""
    path = Path(path).resolve()
    root = registry_root().resolve()
    if root not in path.parents:
        return None
    name = path.relative_to(root).parts[0]
    with contextlib.suppress(Exception):
        for mv in all_versions(name):
            if Path(mv.tags.get("lamina.path") or mv.source).resolve() == path:
                return {"name": name, "version": int(mv.version)}
    return None


def parent_of(run: dict) -> dict | None:
    """The registered version a run was trained from, for lineage chains: its base, or the
    run it continued (a DPO stage on the SFT run's merged model) when that was registered."""
    base = run.get("base") or {}
    for candidate in (base.get("path"), base.get("ref")):
        if candidate and Path(candidate).is_dir():
            found = version_of_dir(Path(candidate))
            if found:
                return found
    parent_run = run.get("parent_run")
    if parent_run:
        pid = Path(str(parent_run)).name
        parent_dir = _run_dir_of(str(parent_run))
        if parent_dir is not None:
            pid = str(read_json(parent_dir / rundir.RUN_JSON).get("id", pid))
        found = tracking.client().search_model_versions(f"tags.`lamina.run_id` = '{pid}'")
        if found:
            mv = min(found, key=lambda v: int(v.version))
            return {"name": mv.name, "version": int(mv.version)}
    return None


def store_base(run: dict) -> dict:
    """A base that lives under the workspace's runs/ (an earlier stage's merged model) is not
    signed and can be edited or deleted: copy it into the registry, content-addressed and
    signed, so the version references only signed things. Returns the run's base record,
    pointing at the stored copy when one was made."""
    base = dict(run.get("base") or {})
    path = Path(base.get("path") or "")
    if not path.is_dir() or rundir.runs_root().resolve() not in path.resolve().parents:
        return base
    from lamina.fsio import sha256_json

    digest = sha256_json({"files": base.get("files"), "tokenizer_files": base.get("tokenizer_files")})
    target = registry_root() / ".bases" / digest[:32]
    if not target.is_dir():
        with atomic_dir(target) as tmp:
            for f in sorted(path.iterdir()):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
            if at_rest.enabled():
                at_rest.seal_folder(tmp)  # registered weights, stored encrypted; signed as stored
            signing.sign_dir(tmp)
    signing.verify_dir(target)
    return {**base, "path": str(target), "stored_from": str(path), "sha256": digest}


def dataset_sources(dataset_version: str | None) -> list[dict]:
    """Provenance (name, licence, sha256, origin, lawful basis) of a dataset version's sources,
    from the intake catalog; empty when the run trained on raw files."""
    if not dataset_version:
        return []
    from lamina.data import catalog

    if not catalog.db_path().exists():
        return []
    from sqlalchemy import select

    with catalog.session() as s:
        try:
            version = catalog.resolve_version(s, dataset_version)
        except LaminaError:
            return []
        rows = s.execute(
            select(catalog.Source, catalog.VersionSource.revision)
            .join(catalog.VersionSource, catalog.VersionSource.source_id == catalog.Source.id)
            .where(catalog.VersionSource.version_id == version.id)
        ).all()
        return [{**src.provenance(), "revision": rev, "path": src.name} for src, rev in rows]


def _run_dir_of(ref: str) -> Path | None:
    for candidate in (Path(ref), workspace.home() / "runs" / ref):
        if rundir.is_run_dir(candidate):
            return candidate
    return None


def run_chain(run: dict, run_dir: Path, limit: int = 16) -> list[dict]:
    """This run and the runs it continued (`parent_run`: SFT before DPO, ...), newest first."""
    chain, seen = [], set()
    while run is not None and len(chain) < limit and run_dir not in seen:
        seen.add(run_dir)
        chain.append(
            {"id": run.get("id", run_dir.name), "stage": run.get("stage"), "objective": run.get("objective"),
             "method": (run.get("method") or {}).get("name"), "dataset_version": tracking.dataset_version(run),
             "user": run.get("user"), "path": str(run_dir)}
        )  # fmt: skip
        parent = run.get("parent_run")
        run_dir = _run_dir_of(str(parent)) if parent else None
        run = rundir.read_run(run_dir) if run_dir else None
    return chain


def lineage_record(name: str, run_dir: Path, run: dict, gate: dict, mlflow_run_id: str, user: str) -> dict:
    return {
        "name": name,
        "run_id": run.get("id", run_dir.name),
        "run_dir": str(run_dir),
        "mlflow_run_id": mlflow_run_id,
        "dataset_version": tracking.dataset_version(run),
        "data": run.get("data"),
        "runs": run_chain(run, run_dir),
        "sources": dataset_sources(tracking.dataset_version(run)),
        "licence": (run.get("data") or {}).get("licence") or tracking.recipe_licence(run_dir),
        "parent": parent_of(run),
        "base": {k: v for k, v in store_base(run).items() if k in ("ref", "path", "stored_from", "sha256")},
        "trained_by": run.get("user"),
        "registered_by": user,
        "registered": now(),
        "gate": {"passed": gate.get("passed"), "sha256": sha256_file(run_dir / rundir.EVAL / "gate.json")},
        "signer": signing.fingerprint(),
        "artifact": artifact_kind(run_dir),
    }


def build_version_dir(target: Path, run_dir: Path, lineage: dict, run: dict, card: RegistrySpec) -> None:
    """Copy, card and sign into a temp sibling; renamed into place whole or not at all."""
    secrets = tracking.secret_values()
    with atomic_dir(target) as tmp:
        shutil.copytree(run_dir / lineage["artifact"], tmp / lineage["artifact"])
        if (run_dir / rundir.TOKENIZER).is_dir():
            shutil.copytree(run_dir / rundir.TOKENIZER, tmp / rundir.TOKENIZER)
        shutil.copytree(run_dir / rundir.EVAL, tmp / rundir.EVAL)
        for name in COPIED_FILES:
            if name == rundir.RUN_JSON and lineage["base"].get("stored_from"):
                # The version loads its base from the signed copy, never from runs/.
                data = json.dumps({**run, "base": {**(run.get("base") or {}), **lineage["base"]}}, indent=2)
                (tmp / name).write_text(tracking.redact(data, secrets))
                continue
            if (run_dir / name).is_file():
                data = (run_dir / name).read_bytes()
                if name.endswith((".json", ".yaml", ".jsonl")):
                    data = tracking.redact(data.decode(), secrets).encode()
                (tmp / name).write_bytes(data)
        write_json(tmp / "lineage.json", lineage)
        write_text(tmp / "README.md", model_card.render(lineage, run, read_json(tmp / "eval" / "gate.json"), card))
        if at_rest.enabled():
            at_rest.seal_folder(tmp)  # the weights stored encrypted; the signature covers them as stored
        crashpoint("register.copied")
        signing.sign_dir(tmp)


def version_tags(lineage: dict, run: dict) -> dict[str, str]:
    base_tags = tracking.run_tags(run, Path(lineage["run_dir"]))
    tags = {
        k: v for k, v in base_tags.items() if k.startswith(("lamina.base.", "lamina.data.", "lamina.code."))
    }
    parent = lineage["parent"]
    tags.update(
        {
            "lamina.run_id": str(lineage["run_id"]),
            "lamina.mlflow_run_id": lineage["mlflow_run_id"],
            "lamina.dataset_version": str(lineage["dataset_version"]),
            "lamina.parent": f"{parent['name']}/{parent['version']}" if parent else "none",
            "lamina.gate": "passed",
            "lamina.gate_sha256": lineage["gate"]["sha256"],
            "lamina.trained_by": str(lineage["trained_by"]),
            "lamina.registered_by": lineage["registered_by"],
            "lamina.signer": lineage["signer"],
            "lamina.artifact": lineage["artifact"],
        }
    )
    return tags


def all_versions(name: str) -> list:
    """Every model version of `name`, across result pages."""
    c, out, token = tracking.client(), [], None
    while True:
        page = c.search_model_versions(f"name = '{check_name(name)}'", page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def sweep_orphans(name: str) -> list[str]:
    """Remove directories no version points at: what a killed or refused register left.
    Called with the model lock held, so no register in progress owns an unreferenced one."""
    root = registry_root() / name
    referenced = {Path(mv.tags.get("lamina.path") or mv.source).name for mv in all_versions(name)}
    removed = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and p.name != ".downloads" and p.name not in referenced:
            shutil.rmtree(p)
            removed.append(p.name)
    if removed:
        audit.record("registry.sweep", name=name, removed=removed)
    return removed


def card_spec(card_text: dict) -> RegistrySpec:
    from pydantic import ValidationError

    given = {k: v for k, v in card_text.items() if v is not None}
    try:
        return RegistrySpec(**given)
    except ValidationError as e:
        key = ".".join(str(p) for p in e.errors()[0]["loc"])
        raise LaminaError("not a model-card field", f"card {key}") from None


def register(run_dir: str | os.PathLike, name: str, **card_text: str | None) -> dict:
    """Register a completed run whose gate passed; returns {name, version, path}.

    `card_text` may set the card's intended_use, out_of_scope and limitations for this model;
    registering the same run with the same gate again reports the version it made (already_done)."""
    user = access.require("register")
    check_name(name)
    card = card_spec(card_text)
    run_dir = Path(run_dir).resolve()
    run = tracking.read_run(run_dir)
    artifact_kind(run_dir)
    # What training logged first: an edited run.json is named as such, not as a stale gate.
    mlflow_run_id = tracking.training_record(run_dir, run)
    tracking.check_unchanged(mlflow_run_id, run, run_dir)
    gate = read_gate(run_dir / rundir.EVAL / "gate.json")
    tracking.check_logged_eval(mlflow_run_id, gate, run_dir / rundir.EVAL / "gate.json")
    check_gate_is_for(run_dir, run)
    signing.ensure_keys()
    lineage = lineage_record(name, run_dir, run, gate, mlflow_run_id, user)
    target = registry_root() / name / f"{lineage['run_id']}-{uuid.uuid4().hex[:8]}"
    key = journal.args_key("register", name=name, run=lineage["run_id"], gate=lineage["gate"]["sha256"])
    with model_lock(name), tracking.server_errors(f"registering {name}"):
        ops.settle(name)  # what a killed register/promote/rollback of this model left
        done = already_registered(name, key)
        if done is not None:
            return done
        sweep_orphans(name)
        with journal.operation(ops.domain(name), "register", user, ops.PROBES["register"], key=key, name=name,
                               run=lineage["run_id"], path=str(target)) as op:
            mv = _create(name, target, run_dir, lineage, run, card, mlflow_run_id, user, op)
            op.result["version"] = int(mv.version)
        anchor(name, op.result["entry"])
    return {"name": name, "version": int(mv.version), "path": str(target)}


def already_registered(name: str, key: str) -> dict | None:
    """The version this same register (run, gate, name) already made, if any."""
    for mv in all_versions(name):
        if mv.tags.get("lamina.op_key") == key:
            path = mv.tags.get("lamina.path") or mv.source
            return {"name": name, "version": int(mv.version), "path": str(path), "already_done": True}
    return None


def _create(name, target, run_dir, lineage, run, card, mlflow_run_id, user, op):
    """The version directory, then the MLflow version tagged with the operation id."""
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    build_version_dir(target, run_dir, lineage, run, card)
    crashpoint("register.signed")
    tracking.log_evaluation(mlflow_run_id, run_dir, target / "README.md")
    try:
        c.get_registered_model(name)
    except MlflowException as e:
        if tracking.denied(e):
            raise
        c.create_registered_model(name, tags={"lamina.created_by": user})
    source = str(target)
    if not tracking.is_embedded():
        # A server accepts only sources inside the run's artifacts; teammates download from there.
        c.log_artifacts(mlflow_run_id, str(target), artifact_path=f"registered/{target.name}")
        source = f"runs:/{mlflow_run_id}/registered/{target.name}"
        crashpoint("register.uploaded")
    mv = c.create_model_version(
        name,
        source=source,
        run_id=mlflow_run_id,
        tags={**version_tags(lineage, run), "lamina.path": str(target), "lamina.op": op.op_id,
              "lamina.op_key": op.key},
        description=f"Lamina run {lineage['run_id']}",
    )
    return mv


def get_version(name: str, version: int):
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version(check_name(name), str(version))
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {name}/{version}", e) from None
        raise LaminaError("no such registered version", f"{name}/{version}") from None


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    m = REF.match(ref or "")
    if not m:
        raise LaminaError("a registry reference is NAME@ALIAS or NAME/VERSION", f"ref {ref!r}")
    return m["name"], m["alias"], int(m["version"]) if m["version"] else None


def version_for(ref: str):
    """The MLflow model version a reference names; an alias must point where Lamina's last
    recorded move of it put it."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_ref(ref)
    if alias is None:
        return get_version(name, version)
    try:
        mv = tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if tracking.denied(e):
            raise tracking.refusal(f"reading {ref}", e) from None
        raise LaminaError(f"no version of {name} has alias {alias!r}", f"ref {ref!r}") from None
    problem = alias_problem(tracking.client().get_registered_model(name).tags, alias, int(mv.version))
    if problem:
        raise LaminaError(f"{problem}; refusing to follow it (see `lamina audit verify`)", f"ref {ref!r}")
    return mv


def local_dir(mv) -> Path:
    """The version's directory on this machine: where it was registered, or a download of
    the copy a tracking server holds (cached in the workspace; verified by the caller)."""
    path = Path(mv.tags.get("lamina.path") or mv.source)
    if path.is_dir():
        return path
    if not str(mv.source).startswith(("runs:/", "mlflow-artifacts:", "s3:", "gs:", "http")):
        raise LaminaError(f"the version's directory {path} is gone", f"{mv.name}/{mv.version}")
    import mlflow.artifacts

    cache = registry_root() / mv.name / ".downloads" / str(mv.version)
    if not cache.is_dir():
        with atomic_dir(cache) as tmp, tracking.server_errors(f"downloading {mv.name}/{mv.version}"):
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(tmp), tracking_uri=tracking.tracking_uri()
            )
    return cache / Path(str(mv.source)).name


def resolve(ref: str) -> Path:
    """The verified artifact directory of `name@alias` or `name/version` (signature checked first)."""
    return verify_version(version_for(ref))[0]


def verify_version(mv) -> tuple[Path, str]:
    """(directory, signer) of a model version whose signature holds under the pinned key and
    whose signer is the one the tracking store recorded at registration: a key replaced
    (`keys init --force`) and used to re-sign edited weights verifies, but not as this signer."""
    path = local_dir(mv)
    signer = signing.verify_dir(path)
    recorded = mv.tags.get("lamina.signer")
    if recorded and recorded != signer:
        raise LaminaError(
            f"signed by key sha256:{signer[:16]}, but the registry recorded sha256:{recorded[:16]} as its "
            "signer when it was registered: re-signed after registration",
            f"{mv.name}/{mv.version}",
        )
    _check_trained_weights(mv, path)
    return path, signer


def _check_trained_weights(mv, path: Path) -> None:
    """Hold the signed artifact to the digest training logged in the tracking store: weights
    edited and re-signed with the same workspace key still verify, but not as what was trained."""
    rid = mv.tags.get("lamina.mlflow_run_id")
    if not rid:
        return  # registered before runs were logged with their digest
    try:
        logged = tracking.client().get_run(rid).data.tags.get("lamina.artifact_sha256")
    except Exception:  # the run was deleted from the store: nothing left to compare with
        return
    kind = artifact_kind(path)
    listed = at_rest.plain_listing(path, signing.signed_files(path))  # sealed files by their plaintext
    digest = sha256_json({k[len(kind) + 1 :]: v for k, v in listed.items() if k.startswith(f"{kind}/")})
    if logged and logged != digest:
        raise LaminaError(
            f"its {kind}/ files differ from what training logged (MLflow run {rid[:12]}): "
            "edited and re-signed after registration",
            f"{mv.name}/{mv.version}",
        )
