"""A run in MLflow while it trains, as MLflow users expect to see it.

The MLflow run is created when training starts (status RUNNING, the real start time, the
author, params as plain values, the dataset version as a logged input), takes each logged
loss record as it is written (so the UI draws the curves live), and is ended with the real
end time: FINISHED by `tracking.log_run` once the outputs exist, FAILED or KILLED here when
training stops early. A tracking store that cannot be reached does not stop training: it is
said once, and `lamina track RUN_DIR` logs the run afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

from lamina.console import console
from lamina.registry import tracking


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
                run = c.create_run(tracking.experiment_id(), start_time=tracking.millis(info.get("started")), tags=tags,
                                   run_name=tags["lamina.run_id"])  # fmt: skip
                self.rid = run.info.run_id
                tracking.opening(c, self.rid, info, recipe)
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
