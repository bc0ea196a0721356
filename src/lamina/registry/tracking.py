"""MLflow run tracking: a finished run directory becomes one MLflow run.

The store is an sqlite file in the workspace unless `LAMINA_TRACKING_URI` (or MLflow's own
`MLFLOW_TRACKING_URI`) names a server; a server's basic-auth credentials come from MLflow's
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` and are never logged.

We log our own sha256s (data, base files, tokenizer, chat template): MLflow's dataset digest
is a truncated MD5 of a sample, not a provenance hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from lamina import rundir, workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json, sha256_file, sha256_json
from lamina.recipe import RegistrySpec

# Environment variables whose values must never reach the store, whatever field they turn up in.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|KEY|CREDENTIAL|AUTH|COOKIE|SESSION", re.I)
# Recipe keys that hold a secret: whole name segments, so `tokens_per_step` is not one.
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|credentials?|api_?key|auth)(_|$)", re.I)
_METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_PARAM_MAX = 6000  # MLflow's limit on a param value


def tracking_uri() -> str:
    uri = os.environ.get("LAMINA_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{workspace.subdir('mlflow') / 'mlflow.db'}"


def is_embedded(uri: str | None = None) -> bool:
    return (uri or tracking_uri()).startswith("sqlite:")


def client():
    """An MlflowClient on the tracking (and registry) store."""
    return _client_for(tracking_uri())


def _uri_key() -> str:
    return "LAMINA_TRACKING_URI" if os.environ.get("LAMINA_TRACKING_URI") else "MLFLOW_TRACKING_URI"


def unreachable(reason: str, outcome: str = "nothing was logged or registered") -> LaminaError:
    return LaminaError(f"the tracking server {_safe_uri()} is unreachable ({reason}); {outcome}", _uri_key())


def _probe(uri: str) -> None:
    """Fail fast on a server that does not answer: MLflow's own client retries with backoff
    for minutes before it gives up."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as e:
        raise unreachable(getattr(e, "strerror", None) or str(e) or type(e).__name__) from None


_CONNECT_TIMEOUT_S = 3.0


def check_reachable() -> None:
    """Before work whose end is logged to the tracking store: a server that does not answer
    is named now, not after the work is done."""
    _probe(tracking_uri())


@functools.lru_cache(maxsize=8)
def _client_for(uri: str):
    # One client per store: opening an sqlite store checks its schema, which costs ~1 s.
    import logging

    _probe(uri)

    from mlflow import MlflowClient

    # MLflow writes "View run at ..." to stdout, which would corrupt `--json` output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def denied(e: Exception) -> bool:
    """Whether an MLflow error is the server refusing these credentials (basic-auth 401/403)."""
    code = getattr(e, "error_code", "") or ""
    return code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or any(f" {n}" in str(e) for n in ("401", "403"))


def refusal(action: str, e: Exception) -> LaminaError:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no credentials)"
    code = getattr(e, "error_code", "") or str(e)[:200]
    hint = ""
    if code == "UNAUTHENTICATED" or " 401" in str(e):
        hint = " (wrong or missing MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
    return LaminaError(f"the MLflow server refused {action} for user {user!r}: {code}{hint}", _safe_uri())


@contextlib.contextmanager
def server_errors(action: str) -> Iterator[None]:
    """Turn an MLflow refusal into a clear LaminaError naming the action and the user."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        if denied(e):
            raise refusal(action, e) from None
        if "Max retries exceeded" in str(e) or "Connection refused" in str(e):
            raise unreachable(f"while {action}", "run the command again once it answers") from None
        raise


def experiment_id(name: str | None = None) -> str:
    name = name or RegistrySpec().experiment
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND[0] not in exp.tags:  # made by an older Lamina, or by hand
            with contextlib.suppress(Exception):
                c.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if is_embedded():
        location = (workspace.subdir("mlflow") / "artifacts").as_uri()
    with server_errors("creating the experiment"):
        try:
            # tagged as model training, so MLflow's UI opens the runs view, not GenAI tracing
            return c.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except Exception:
            # another process created it between our lookup and our insert: use theirs
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (long enough not to match by accident)."""
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]


def redact(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested recipe → {"train.lr": "0.0002", "method.name": "lora", ...}; keys that look secret are
    masked outright."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix.rstrip(".")
    leaf = key.rsplit(".", 1)[-1]
    # `*_env` keys name the variable a secret is read from; the name itself is not secret.
    secret = _SECRET_KEY.search(leaf) and not leaf.endswith("_env") and obj
    # Strings as they are (MLflow shows `lora`, not `"lora"`); numbers, booleans, lists as JSON.
    out[key] = "***" if secret else obj if isinstance(obj, str) else json.dumps(obj)
    return out


def read_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / rundir.RUN_JSON).is_file():
        raise LaminaError("not a Lamina run directory (no run.json)", str(run_dir))
    run = read_json(run_dir / rundir.RUN_JSON)
    if run.get("status") != "completed":
        raise LaminaError(f"run is {run.get('status')!r}, not completed", str(run_dir / rundir.RUN_JSON))
    return run


def dataset_version(run: dict) -> str | None:
    data = run.get("data") or {}
    return data.get("dataset_version") or data.get("dataset")


def dir_sha256(path: Path) -> str:
    """One hash over every file's relative name and sha256: the trained weights as logged."""
    return sha256_json(
        {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    )


def recipe_licence(run_dir: Path) -> str | None:
    """The licence the run's recipe declared for raw data files (run.json carries none):
    logged with the run, so an edit of recipe.yaml before `register` is seen."""
    path = Path(run_dir) / rundir.RECIPE
    recipe = yaml.safe_load(path.read_text()) if path.is_file() else None
    return ((recipe or {}).get("data") or {}).get("licence")


def run_tags(run: dict, run_dir: Path) -> dict[str, str]:
    """Lineage tags: what a later `lineage` query searches on."""
    base, data, code = run.get("base") or {}, run.get("data") or {}, run.get("code") or {}
    tags = {
        "lamina.run_id": str(run.get("id", run_dir.name)),
        "lamina.run_dir": str(run_dir.resolve()),
        "lamina.user": str(run.get("user")),
        "lamina.seed": str(run.get("seed")),
        "lamina.method": str((run.get("method") or {}).get("name")),
        "lamina.code.git_commit": str(code.get("git_commit")),
        "lamina.code.dirty": str(code.get("dirty")),
        "lamina.base.ref": str(base.get("ref") or base.get("path")),
        "lamina.base.files_sha256": sha256_json(base.get("files") or {}),
        "lamina.base.tokenizer_sha256": sha256_json(base.get("tokenizer_files") or {}),
        "lamina.base.chat_template_sha256": str(base.get("chat_template_sha256")),
        "lamina.data.train_sha256": str(data.get("train_sha256")),
        "lamina.data.eval_sha256": str(data.get("eval_sha256")),
        "lamina.data.licence": str(data.get("licence") or recipe_licence(run_dir)),
        "mlflow.runName": str(run.get("id", run_dir.name)),
    }
    for kind in ("adapter", "model"):
        if (run_dir / kind).is_dir():
            tags["lamina.artifact_sha256"] = dir_sha256(run_dir / kind)
    if run.get("parent_run"):
        tags["lamina.parent_run"] = Path(str(run["parent_run"])).name
    if dataset_version(run):
        tags["lamina.dataset_version"] = str(dataset_version(run))
    for lib, version in (run.get("versions") or {}).items():
        tags[f"lamina.versions.{lib}"] = str(version)
    return tags


def _metrics(run_dir: Path, start_ms: int = 0, after_step: int = 0):
    """Metrics of metrics.jsonl past `after_step`, stamped at the run's start + their training seconds."""
    from mlflow.entities import Metric

    path = run_dir / rundir.METRICS
    if not path.is_file():
        return []
    metrics = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise LaminaError("not valid JSON", f"{path}:{lineno}") from None
        step = int(record.get("step", lineno))
        if step <= after_step:
            continue
        seconds = record.get("seconds")
        stamp = start_ms + int(seconds * 1000) if isinstance(seconds, int | float) else start_ms
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, int | float) and not isinstance(value, bool):
                metrics.append(Metric(key, float(value), stamp, step))
    return metrics


def find_run(lamina_run_id: str) -> str | None:
    """The MLflow run already logged for a Lamina run id, if any (logging is idempotent)."""
    # A run whose logging was interrupted lacks `lamina.logged` and is logged afresh.
    query = f"tags.`lamina.run_id` = '{lamina_run_id}' and tags.`lamina.logged` = 'true'"
    found = client().search_runs([experiment_id()], filter_string=query, max_results=1)
    return found[0].info.run_id if found else None


def _scrubbed_copy(src: Path, dst: Path, secrets: list[str]) -> None:
    dst.write_text(redact(src.read_text(encoding="utf-8"), secrets), encoding="utf-8")


def _log_artifacts(c, mlflow_run_id: str, run_dir: Path, secrets: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Text we log is scrubbed; weights are binary and come from our own code, not the environment.
        for name in (rundir.RUN_JSON, rundir.RECIPE, rundir.METRICS):
            if (run_dir / name).is_file():
                _scrubbed_copy(run_dir / name, Path(tmp) / name, secrets)
                c.log_artifact(mlflow_run_id, str(Path(tmp) / name))
    for name in ("adapter", "model", rundir.TOKENIZER, rundir.EVAL):
        if (run_dir / name).is_dir():
            c.log_artifacts(mlflow_run_id, str(run_dir / name), artifact_path=name)
    if (run_dir / rundir.LOSS_PLOT).is_file():
        c.log_artifact(mlflow_run_id, str(run_dir / rundir.LOSS_PLOT))


def log_run(run_dir: str | os.PathLike) -> str:
    """Log a completed run directory to MLflow; returns the MLflow run id (same id on a re-call)."""

    run_dir = Path(run_dir).resolve()
    run = read_run(run_dir)
    secrets = secret_values()
    recipe = (
        yaml.safe_load((run_dir / rundir.RECIPE).read_text()) if (run_dir / rundir.RECIPE).is_file() else {}
    )
    c = client()
    lamina_id = str(run.get("id", run_dir.name))
    from lamina.governance import journal

    # One logging at a time on this machine, as an operation: a kill between the logging and
    # its audit entry is settled by the next `track` (the run's `lamina.logged` tag is the proof).
    with journal.locked(TRACK_DOMAIN):
        journal.settle(TRACK_DOMAIN, {"track": _logged})
        with server_errors("logging the run"):
            existing = find_run(lamina_id)  # logged by the one just settled, or by another process
        if existing:
            return existing
        with journal.operation(TRACK_DOMAIN, "track", workspace.user(), _logged, key=lamina_id,
                               run=lamina_id, tracking_uri=_safe_uri()) as op:
            op.result["mlflow_run_id"] = _log(c, run_dir, run, recipe, secrets)
        return op.result["mlflow_run_id"]


TRACK_DOMAIN = "tracking"


def _logged(intent) -> dict | None:
    """Whether a `track` a kill interrupted finished logging its run."""
    rid = find_run(intent.details["run"])
    return {"mlflow_run_id": rid} if rid else None


def _log(c, run_dir: Path, run: dict, recipe: dict, secrets: list[str]) -> str:
    from mlflow.entities import RunTag

    with server_errors("logging the run"):
        start_ms = millis(run.get("started")) or 0
        rid = _live_run(c, run)  # created when training started, curves already logged
        after = _last_step(c, rid) if rid else 0
        # parsed before anything is created: bad input changes nothing
        metrics = _metrics(run_dir, start_ms, after)
        tags = {k: redact(v, secrets) for k, v in run_tags(run, run_dir).items()}
        if rid is None:
            mlflow_run = c.create_run(experiment_id(), start_time=start_ms or None, tags=tags,
                                      run_name=tags["mlflow.runName"])  # fmt: skip
            rid = mlflow_run.info.run_id
            opening(c, rid, run, recipe or {})
        else:
            c.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        for i in range(0, len(metrics), _METRIC_BATCH):
            c.log_batch(rid, metrics=metrics[i : i + _METRIC_BATCH])
        _log_artifacts(c, rid, run_dir, secrets)
        c.log_batch(rid, tags=[RunTag("lamina.logged", "true")])
        c.set_terminated(rid, "FINISHED", end_time=millis(run.get("finished")))
    return rid


def _live_run(c, run: dict) -> str | None:
    """The MLflow run opened when this run started training, if it is still there."""
    rid = run.get("mlflow_run_id")
    if not rid:
        return None
    try:
        found = c.get_run(rid)
    except Exception:  # deleted, or logged to another store: log the run afresh
        return None
    return rid if found.info.lifecycle_stage == "active" else None


def _last_step(c, rid: str) -> int:
    """The last step whose loss reached the store while training."""
    history = c.get_metric_history(rid, "loss")
    return max((m.step for m in history), default=0)


# The experiment type MLflow's UI opens with: a training experiment, not GenAI tracing.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def millis(stamp: str | None) -> int | None:
    """run.json's `%Y-%m-%dT%H:%M:%S%z` stamps as MLflow's epoch milliseconds."""
    if not stamp:
        return None
    return int(dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)


def dataset_input(run: dict):
    """The dataset version as an MLflow input: name, our digest, where it lives, its counts."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data = run.get("data") or {}
    version = dataset_version(run)
    if not version:
        return None
    path = data.get("dataset_path")
    source = {"uri": Path(path).resolve().as_uri()} if path else {"uri": f"lamina-dataset:{version}"}
    profile = {k: data.get(k) for k in ("train_records", "eval_records", "format") if data.get(k) is not None}
    dataset = Dataset(
        name=str(data.get("dataset") or version[:12]),
        digest=version[:36],  # MLflow's digest column holds 36 characters; the full id is a tag
        source_type="local",
        source=json.dumps(source),
        profile=json.dumps(profile) if profile else None,
    )
    tags = [InputTag("mlflow.data.context", "training"), InputTag("lamina.dataset_version", version)]
    return DatasetInput(dataset, tags)


def opening(c, rid: str, run: dict, recipe: dict) -> None:
    """What a run carries from its start: params, author, dataset input."""
    from mlflow.entities import Param, RunTag

    secrets = secret_values()
    params = [
        Param(k[:250], redact(v, secrets)[: _PARAM_MAX])
        for k, v in flatten(recipe).items()
    ]
    for i in range(0, len(params), 100):
        c.log_batch(rid, params=params[i : i + 100])
    c.log_batch(rid, tags=[RunTag("mlflow.user", str(run.get("user") or workspace.user()))])
    found = dataset_input(run)
    if found is not None:
        c.log_inputs(rid, datasets=[found])


def _safe_uri() -> str:
    """The tracking URI without any user:password@ part, for the audit log."""
    return re.sub(r"//[^/@]*@", "//", tracking_uri())


def log_evaluation(
    mlflow_run_id: str, run_dir: Path, card: Path | None = None, eval_dir: Path | None = None
) -> None:
    """Add what came after training to its MLflow run: the eval report and gate (artifacts
    under eval/, numbers as `eval.<suite>.<metric>`, the verdict as a tag) and the model card."""
    import time

    from mlflow.entities import Metric, RunTag

    c = client()
    eval_dir = Path(eval_dir) if eval_dir else Path(run_dir) / rundir.EVAL
    gate_file = eval_dir / "gate.json"
    gate = read_json(gate_file) if gate_file.is_file() else {}
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"eval.{suite}.{key}", float(value), now, 0)
        for suite, values in (gate.get("results") or {}).items()
        if isinstance(values, dict)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    with server_errors("logging the evaluation"):
        c.log_batch(
            mlflow_run_id, metrics=metrics, tags=[RunTag("lamina.gate", str(gate.get("passed")).lower())]
        )
        if eval_dir.is_dir():
            c.log_artifacts(mlflow_run_id, str(eval_dir), artifact_path="eval")
        if card is not None:
            c.log_artifact(mlflow_run_id, str(card), artifact_path="model_card")


def log_eval_of_run(run_dir: Path, eval_dir: Path) -> str | None:
    """`lamina eval` of a run: its metrics and report go to the run's MLflow run (the one
    opened while it trained, or logged when it finished); None when the run was never logged."""
    run_file = Path(run_dir) / "run.json"
    if not run_file.is_file():
        return None  # a plain model directory has no MLflow run
    run = read_json(run_file)
    with server_errors("logging the evaluation"):
        rid = _live_run(client(), run) or find_run(str(run.get("id", Path(run_dir).name)))
        if rid is None:
            return None
    log_evaluation(rid, Path(run_dir), eval_dir=eval_dir)
    return rid


# Provenance a run directory must still show when it is registered.
_PINNED = ("lamina.user", "lamina.seed", "lamina.method", "lamina.code.git_commit", "lamina.base.files_sha256",
           "lamina.base.tokenizer_sha256", "lamina.base.chat_template_sha256", "lamina.data.train_sha256",
           "lamina.data.eval_sha256", "lamina.data.licence", "lamina.dataset_version",
           "lamina.artifact_sha256")  # fmt: skip


def training_record(run_dir: Path, run: dict) -> str:
    """The MLflow run logged when `run_dir` finished training, found by the directory's path
    (which an edit of run.json cannot change). Refuses when nothing logged this directory (a
    copied run), or when it was logged as another run (a new id or user written into run.json)."""
    run_dir = Path(run_dir).resolve()
    query = f"tags.`lamina.run_dir` = '{run_dir}' and tags.`lamina.logged` = 'true'"
    with server_errors("looking up the training run"):
        found = client().search_runs([experiment_id()], query, max_results=10)
    claimed = str(run.get("id", run_dir.name))
    for r in found:
        logged_as = r.data.tags.get("lamina.run_id")
        if logged_as != claimed:
            raise LaminaError(
                f"run.json says run {claimed!r}, but training logged this directory as run {logged_as!r} "
                f"(MLflow {r.info.run_id[:12]}): run.json was edited after training",
                str(run_dir / "run.json"),
            )
    if not found:
        raise LaminaError(
            "no training run logged this directory (a copied or hand-made run); `lamina track RUN` logs "
            "one on purpose, audited",
            str(run_dir),
        )
    return found[0].info.run_id


def check_logged_eval(mlflow_run_id: str, gate: dict, gate_path: Path) -> None:
    """Refuse a verdict whose candidate numbers differ from what `lamina eval` logged to the
    run's MLflow run (`eval.<suite>.<metric>`): a report and gate rewritten and re-signed with
    the workspace's own key still disagree with the tracking store."""
    logged = client().get_run(mlflow_run_id).data.metrics
    differ = []
    for suite, values in (gate.get("results") or {}).items():
        for key, value in (values.items() if isinstance(values, dict) else ()):
            name = f"eval.{suite}.{key}"
            if name in logged and isinstance(value, int | float) and not isinstance(value, bool) \
                    and abs(float(value) - logged[name]) > 1e-9 * max(1.0, abs(logged[name])):
                differ.append(f"{suite}.{key} {value} (logged {logged[name]:g})")
    if differ:
        raise LaminaError(f"the verdict's numbers differ from what the evaluation logged to MLflow run "
                          f"{mlflow_run_id[:12]}: {'; '.join(differ)}", str(gate_path))


def check_unchanged(mlflow_run_id: str, run: dict, run_dir: Path) -> None:
    """Refuse a run directory whose run.json or weights no longer match what was logged when
    it finished (what was trained, and then evaluated, is what gets registered)."""
    logged = client().get_run(mlflow_run_id).data.tags
    now = {k: redact(v, secret_values()) for k, v in run_tags(run, run_dir).items()}
    changed = [k for k in _PINNED if logged.get(k) != now.get(k)]
    if changed:
        raise LaminaError(
            f"the run differs from what was logged when it finished ({', '.join(changed)})",
            str(Path(run_dir)),
        )
