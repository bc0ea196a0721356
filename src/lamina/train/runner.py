"""A training run, top to bottom: set up → train → save, fresh or resumed.

Set-up (lamina.train.setup) checks everything that can fail on bad input before the run
directory exists, so a bad run leaves nothing behind. Once training starts, a crash leaves
the run directory with its last checkpoint, marked failed, and `lamina train --resume
RUN_DIR` continues it (lamina.train.resume). The directory's layout is lamina.rundir's.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from lamina import faults, rundir
from lamina.errors import LaminaError
from lamina.fsio import append_line, atomic_dir, read_json, write_json, write_text
from lamina.recipe import Recipe
from lamina.train import checkpoint as ckpt
from lamina.train import distributed
from lamina.train import inputs as run_inputs
from lamina.train.loop import LoopState
from lamina.train.loss_plot import plot_loss
from lamina.train.progress import training_bar
from lamina.train.provenance import run_info
from lamina.train.resume import check_resumable, restore
from lamina.train.setup import Setup, setup


def train(recipe: Recipe, progress: bool = True, run_dir: Path | None = None, resume: bool = False,
          lineage: dict | None = None) -> Path:
    """Train from a recipe; returns the run directory. `lineage` (e.g. parent_run) goes into run.json."""
    if recipe.train.objective in ("grpo", "rloo"):  # online RL: rollouts between the loop's steps
        from lamina.train.grpo import train_grpo

        if distributed.launched() and distributed.world() > 1:
            raise LaminaError(f"{recipe.train.objective} runs on one process for now; start it without torchrun",
                              "train.objective")
        if resume:
            raise LaminaError(f"{recipe.train.objective} runs cannot be resumed; start a new run", str(run_dir))
        return train_grpo(recipe, progress, run_dir, lineage)
    from lamina.registry import reporters

    reporters.check(recipe)
    d = distributed.current(recipe.distributed)  # None unless started by torchrun
    s = setup(recipe, d, new_output=run_dir is None)
    main = d is None or d.main  # only rank 0 writes the run directory and talks to tracking
    try:
        run_dir = run_dir or (rundir.new_run_dir(recipe) if main else None)
    except BaseException:
        s.data.discard()
        raise
    s.data.commit()  # the first write: everything above was checked
    run_dir = Path(d.broadcast(str(run_dir))) if d else run_dir
    info = run_info(s, run_dir, None) if main else {}
    if resume:
        if main:  # the inputs the run started with, by hash: refused before anything is written
            info["data"] = run_inputs.check(run_dir, info)
        meta = restore(run_dir, s)
        info["started"] = meta.get("started") or info.get("started")
    elif main:
        from lamina.data.intake.training import resolved

        run_dir.mkdir(parents=True, exist_ok=True)
        recipe = resolved(recipe)
        write_text(run_dir / rundir.RECIPE, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        run_inputs.write(run_dir, recipe, info)
    if resume:
        info.update({k: meta[k] for k in ("parent_run", "stage", "reward_run", "mlflow_run_id", "overrides") if k in meta})
    info.update(lineage or {})
    # MLflow (and tracking.report_to) show the run while it trains; rank 0 only
    live = reporters.Reporters(run_dir, info, recipe) if main else None
    if live and live.rid:
        info["mlflow_run_id"] = live.rid
    if main:
        write_json(run_dir / rundir.RUN_JSON, info)
    prepare = getattr(s.loop.objective, "prepare", None)
    if prepare:  # e.g. DPO's one pass of reference log-probs, stored with the run
        prepare(run_dir, s.loop)
    if main:

        def on_log(record: dict) -> None:
            append_line(run_dir / rundir.METRICS, rundir.metrics_line(record).rstrip("\n"))
            live.log(record)

        s.loop.on_log = on_log
    save = d.save_checkpoint if d else ckpt.save_checkpoint

    def on_checkpoint(state: LoopState) -> None:
        save(run_dir / rundir.CHECKPOINTS / f"step-{state.step:06d}", s.model, s.loop.optimizer, s.loop.sampler,
             state)
        faults.point("train.checkpoint")  # the resume tests kill the run here

    s.loop.on_checkpoint = on_checkpoint
    try:
        with training_bar(recipe.name, s.loop.total_steps, s.loop.state.step, progress and main) as bar:
            s.loop.progress = bar
            state = s.loop.run(recipe.train.max_seconds)
    except BaseException as e:
        _record_failure(run_dir, info, e, main)
        if main:
            live.stop(interrupted=isinstance(e, KeyboardInterrupt))
        raise
    if d:
        d.gather_for_save(s.model)  # full tensors on rank 0: the same artifact as one process writes
    if main:
        live.close()
        save_outputs(s, run_dir, state, info)
        from lamina.registry.tracking import log_run

        log_run(run_dir)  # the MLflow record: params, provenance hashes, metrics, artifacts
    if d:
        d.barrier()  # a next stage on any rank starts from what rank 0 just wrote
    return run_dir


def save_outputs(s: Setup, run_dir: Path, state: LoopState, info: dict) -> None:
    with atomic_dir(run_dir / s.method.ARTIFACT, replace=True) as tmp:
        s.method.save(s.model, tmp)
    with atomic_dir(run_dir / rundir.TOKENIZER, replace=True) as tmp:
        s.tokenizer.save_pretrained(tmp)
    save_extra = getattr(s.loop.objective, "save", None)
    if save_extra:  # e.g. a reward model's scalar head
        save_extra(s.model, run_dir)
    history = rundir.read_metrics(run_dir)
    if history:
        plot_loss(history, run_dir / rundir.LOSS_PLOT)
    info.update(status="completed", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), steps=state.step,
                tokens=state.tokens, loss_tokens=state.loss_tokens, train_seconds=round(state.seconds, 3),
                final_loss=history[-1]["loss"] if history else None)
    write_json(run_dir / rundir.RUN_JSON, info)


def resume(run_dir: Path, progress: bool = True) -> Path:
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    # The inputs the run started with, by hash — not the recipe's files taken in again.
    recipe = run_inputs.pinned_recipe(run_inputs.read(run_dir))
    return train(recipe, progress, run_dir=run_dir, resume=True)


def _record_failure(run_dir: Path, info: dict, e: BaseException, main: bool) -> None:
    """Mark the run failed (or interrupted). Rank 0 writes it; a rank that failed itself writes
    its own error too, because torchrun may SIGKILL rank 0 while it waits in a collective, before
    its SIGTERM handler runs, which would leave the run "running". Rank 0 keeps such a rank's
    error rather than writing its own "stopped by the launcher" over it."""
    path = run_dir / rundir.RUN_JSON
    stopped = isinstance(e, distributed.Stopped)
    if not main:
        if stopped or not path.is_file():
            return
        info = read_json(path)
    elif stopped and path.is_file() and read_json(path).get("status") == "failed":
        return
    info.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e)[:500])
    write_json(path, info)
