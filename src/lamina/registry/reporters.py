"""Where a training run's curves go while it trains (`tracking.report_to`): MLflow always
(registry/live.py), TensorBoard and Weights & Biases when the recipe asks, as TRL and Axolotl
users expect. The libraries write their own formats; Lamina only hands them each log record.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lamina.errors import LaminaError
from lamina.recipe import Recipe
from lamina.registry import tracking
from lamina.registry.live import LiveRun

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check(recipe: Recipe) -> None:
    """Refuse, before anything is written, a reporter whose package is not installed."""
    for name in recipe.tracking.report_to:
        package = _PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise LaminaError(f"{name} is not installed (pip install {package})", "tracking.report_to")


def _numbers(record: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class Reporters:
    """MLflow's live run plus the optional writers, fed the same records."""

    def __init__(self, run_dir: Path, info: dict, recipe: Recipe):
        spec, dumped = recipe.tracking, recipe.model_dump(mode="json")
        self.mlflow = LiveRun(run_dir, info, dumped)
        self.rid = self.mlflow.rid
        self.tensorboard = self.wandb = None
        if "tensorboard" in spec.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            self.tensorboard.add_text("recipe", f"```yaml\n{_yaml(dumped)}\n```")
        if "wandb" in spec.report_to:
            import wandb

            self.wandb = wandb.init(
                project=spec.wandb_project, name=str(info.get("id", Path(run_dir).name)), dir=str(run_dir),
                mode=spec.wandb_mode, config=tracking.flatten(dumped), resume="allow",
                settings=wandb.Settings(silent=True, console="off"),
            )  # fmt: skip

    def log(self, record: dict) -> None:
        self.mlflow.log(record)
        step, values = int(record["step"]), _numbers(record)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def close(self, failed: bool = False, interrupted: bool = False) -> None:
        """Flush the writers; on an early stop the MLflow run ends FAILED or KILLED (a finished
        run is ended by tracking.log_run, which also logs its outputs)."""
        if failed or interrupted:
            self.mlflow.stop(interrupted)
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed or interrupted else 0)

    def stop(self, interrupted: bool) -> None:
        self.close(failed=not interrupted, interrupted=interrupted)


def _yaml(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
