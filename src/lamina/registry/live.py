"""A run in MLflow while it trains, as MLflow users expect to see it.

The MLflow run is created when training starts (status RUNNING, the real start time, the
author, params as plain values, the dataset version as a logged input), takes each logged
loss record as it is written (so the UI draws the curves live), and is ended with the real
end time: FINISHED by `tracking.log_run` once the outputs exist, FAILED or KILLED here when
training stops early. A tracking store that cannot be reached does not stop training: it is
said once, and `lamina track RUN_DIR` logs the run afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from lamina import workspace
from lamina.console import console
from lamina.registry import tracking

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
    version = tracking.dataset_version(run)
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

    secrets = tracking.secret_values()
    params = [
        Param(k[:250], tracking.redact(v, secrets)[: tracking._PARAM_MAX])
        for k, v in tracking.flatten(recipe).items()
    ]
    for i in range(0, len(params), 100):
        c.log_batch(rid, params=params[i : i + 100])
    c.log_batch(rid, tags=[RunTag("mlflow.user", str(run.get("user") or workspace.user()))])
    found = dataset_input(run)
    if found is not None:
        c.log_inputs(rid, datasets=[found])


class LiveRun:
    """The MLflow side of one training process."""

    def __init__(self, run_dir: Path, info: dict, recipe: dict):
        self.rid: str | None = None
        try:
            c = tracking.client()
            with tracking.server_errors("starting the run"):
                existing = info.get("mlflow_run_id")  # a resumed run continues its MLflow run
                if existing and c.get_run(existing).info.lifecycle_stage == "active":
                    c.update_run(existing, status="RUNNING")
                    self.rid = existing
                    return
                tags = {
                    "lamina.run_id": str(info.get("id", run_dir.name)),
                    "lamina.run_dir": str(Path(run_dir).resolve()),
                    "lamina.live": "true",
                }
                run = c.create_run(tracking.experiment_id(), start_time=millis(info.get("started")), tags=tags,
                                   run_name=tags["lamina.run_id"])  # fmt: skip
                self.rid = run.info.run_id
                opening(c, self.rid, info, recipe)
        except Exception as e:  # the store is the user's; training goes on without it
            self._give_up(e)

    def _give_up(self, e: Exception) -> None:
        console.print(f"MLflow tracking unavailable ({str(e)[:200]}); `lamina track RUN_DIR` logs the run later",
                      markup=False, highlight=False)  # fmt: skip
        self.rid = None

    def log(self, record: dict) -> None:
        if self.rid is None:
            return
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), int(record["step"])
        metrics = [
            Metric(k, float(v), stamp, step)
            for k, v in record.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
        ]
        try:
            tracking.client().log_batch(self.rid, metrics=metrics)
        except Exception as e:
            self._give_up(e)

    def stop(self, interrupted: bool) -> None:
        """Training stopped early: the run ends as KILLED (Ctrl-C) or FAILED, at this time."""
        if self.rid is None:
            return
        try:
            tracking.client().set_terminated(
                self.rid, "KILLED" if interrupted else "FAILED", int(time.time() * 1000)
            )
        except Exception as e:
            self._give_up(e)
