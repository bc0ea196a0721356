"""A training run, top to bottom: setup → train → save.

Everything that can fail on bad input (recipe, data, base model, tokenisation) is checked
before the run directory exists, so a bad run leaves nothing behind. Once training starts,
a crash leaves the run directory with its last checkpoint, marked failed, and
`lamina train --resume RUN_DIR` continues it.
"""

from __future__ import annotations

import math
import random
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lamina import methods, workspace
from lamina.data.chat import Tokenized, tokenize_chat
from lamina.data.dataset import TrainingData, load_training_data
from lamina.data.formats import Example
from lamina.data.packing import StepSampler
from lamina.errors import LaminaError
from lamina.fsio import append_line, atomic_dir, read_json, write_json, write_text
from lamina.models import kernels
from lamina.models.attention import varlen_available
from lamina.models.loading import hash_model_files, load_hf_model, load_tokenizer, pick_device, resolve_base
from lamina.recipe import Recipe, TrainSpec, load_recipe
from lamina.train import checkpoint as ckpt
from lamina.train import memory
from lamina.train.loop import Loop, LoopState
from lamina.train.objectives.sft import SFT
from lamina.train.optim import build_optimizer
from lamina.train.progress import training_bar


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def tokenize_examples(tokenizer, records, loss_on: str, max_length: int, overlong: str, source: str
                      ) -> tuple[list[Tokenized], dict]:
    """Tokenise SFT records, truncating or dropping the overlong ones (counted)."""
    out, truncated, dropped = [], 0, 0
    for rec in records:
        if not isinstance(rec, Example):
            raise LaminaError("preference records need a preference objective (dpo); sft takes chat records", source)
        tok = tokenize_chat(tokenizer, rec.messages, loss_on)
        if len(tok.input_ids) > max_length:
            if overlong == "drop":
                dropped += 1
                continue
            tok = Tokenized(tok.input_ids[:max_length], tok.labels[:max_length])
            truncated += 1
            if not any(tok.labels[1:]):
                dropped += 1
                continue
        out.append(tok)
    if not out:
        raise LaminaError(f"no example fits in data.max_length={max_length} ({dropped} dropped)", source)
    return out, {"examples": len(out), "truncated": truncated, "dropped": dropped}


def attention_plan(device: torch.device) -> tuple[str, str]:
    """(plan, transformers attn implementation) for the device."""
    if varlen_available(device):
        return "varlen", "lamina_varlen"
    return "masked", "sdpa"


def total_steps(spec: TrainSpec, examples: list[Tokenized]) -> int:
    if spec.steps:
        return spec.steps
    tokens = sum(len(e.input_ids) for e in examples)
    return max(1, math.ceil(spec.epochs * tokens / spec.tokens_per_step))


def make_loop(model, examples, spec: TrainSpec, device, plan: str, seed: int, row_len: int, objective=SFT) -> Loop:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LaminaError("the method left no trainable parameters", "method")
    model.train()  # checkpointing and dropout act in training mode only; a loaded model is in eval
    if spec.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
    micro = spec.micro_tokens or spec.tokens_per_step
    if spec.micro_tokens is None and device.type == "cuda":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        budget = spec.activation_budget_gib or memory.default_budget_gib(device)
        micro = memory.micro_tokens(base.config, spec.tokens_per_step, budget, spec.gradient_checkpointing, row_len)
    return Loop(
        model=model, examples=examples, spec=spec, objective=objective, micro_tokens=micro,
        # A method may bring its own optimiser (QLoRA's paged 8-bit AdamW).
        optimizer=(getattr(model, "lamina_optimizer", None) or build_optimizer)(params, spec, device),
        sampler=StepSampler([example_length(objective, e) for e in examples], spec.tokens_per_step, seed),
        device=device, plan=plan, row_len=row_len, total_steps=total_steps(spec, examples),
    )


def example_length(objective, example) -> int:
    """Tokens an example costs (a preference pair: both of its sequences)."""
    length = getattr(objective, "length", None)
    return length(example) if length else len(example.input_ids)


def code_version() -> dict:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit or None, "dirty": dirty}


def library_versions() -> dict:
    import peft
    import transformers

    import lamina

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "lamina": lamina.__version__}


@dataclass
class Setup:
    recipe: Recipe
    data: TrainingData
    base_dir: Path
    tokenizer: object
    model: torch.nn.Module
    loop: Loop
    method: object
    device: torch.device
    data_stats: dict


def setup(recipe: Recipe) -> Setup:
    """Everything before the first step. Raises LaminaError on bad input; writes nothing."""
    seed_everything(recipe.seed)
    data = load_training_data(recipe)
    base_dir = resolve_base(recipe.model.base, recipe.model.revision)
    device = pick_device()
    plan, attn = attention_plan(device)
    method = methods.get(recipe.method.name)
    # Frozen bases are stored in bf16 on CUDA; full fine-tuning keeps fp32 master weights.
    dtype = torch.bfloat16 if device.type == "cuda" and recipe.method.name != "full" else torch.float32
    tokenizer = load_tokenizer(base_dir)
    preference = recipe.train.objective in ("dpo", "reward")
    if preference:
        from lamina.train.objectives import pairs

        examples, stats = pairs.tokenize_pairs(tokenizer, data.train, recipe.data, recipe.data.train)
    else:
        examples, stats = tokenize_examples(tokenizer, data.train, recipe.data.loss_on, recipe.data.max_length,
                                            recipe.data.overlong, recipe.data.train)
    load_base = getattr(method, "load_base", None)  # QLoRA loads the base straight into 4-bit
    if load_base:
        model = load_base(base_dir, device, recipe.method, recipe.model.allow_pickle, attn)
    else:
        model = load_hf_model(base_dir, device, dtype, recipe.model.allow_pickle, attn)
    kernels.apply(model, recipe.train.fused_kernels)
    model = method.apply(model, recipe.method)
    objective = pairs.build_objective(recipe, model, plan) if preference else SFT
    loop = make_loop(model, examples, recipe.train, device, plan, recipe.seed, recipe.data.max_length, objective)
    return Setup(recipe, data, base_dir, tokenizer, model, loop, method, device, stats)


def new_run_dir(recipe: Recipe) -> Path:
    if recipe.output.dir:
        path = Path(recipe.output.dir)
        if path.exists() and any(path.iterdir()):
            raise LaminaError(f"{path} exists and is not empty (resume with `lamina train --resume {path}`)",
                              "output.dir")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return workspace.subdir("runs") / f"{recipe.name}-{stamp}-{secrets.token_hex(2)}"


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def read_metrics(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(recipe: Recipe, progress: bool = True, run_dir: Path | None = None, resume: bool = False,
          lineage: dict | None = None) -> Path:
    """Train from a recipe; returns the run directory. `lineage` (e.g. parent_run) goes into run.json."""
    s = setup(recipe)
    run_dir = run_dir or new_run_dir(recipe)
    started = None
    if resume:
        meta = read_json(run_dir / "run.json")
        started = meta.get("started")
        last = ckpt.latest(run_dir)
        if last is not None:
            ckpt.load_checkpoint(last, s.model, s.loop.optimizer, s.loop.sampler, s.loop.state)
        # Metrics past the checkpoint were logged by the interrupted process; they are redone.
        kept = [m for m in read_metrics(run_dir) if m["step"] <= s.loop.state.step]
        write_text(run_dir / "metrics.jsonl", "".join(_json_line(m) for m in kept))
        s.loop.state.history = kept
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    info = run_info(s, run_dir, started)
    if resume:
        info.update({k: meta[k] for k in ("parent_run", "stage", "reward_run") if k in meta})
    info.update(lineage or {})
    write_json(run_dir / "run.json", info)
    prepare = getattr(s.loop.objective, "prepare", None)
    if prepare:  # e.g. DPO's one pass of reference log-probs, stored with the run
        prepare(run_dir, s.loop)
    s.loop.on_log = lambda record: append_line(run_dir / "metrics.jsonl", _json_line(record).rstrip("\n"))
    s.loop.on_checkpoint = lambda state: ckpt.save_checkpoint(
        run_dir / "checkpoints" / f"step-{state.step:06d}", s.model, s.loop.optimizer, s.loop.sampler, state)
    try:
        with training_bar(recipe.name, s.loop.total_steps, s.loop.state.step, progress) as bar:
            s.loop.progress = bar
            state = s.loop.run(recipe.train.max_seconds)
    except BaseException as e:
        info.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e)[:500])
        write_json(run_dir / "run.json", info)
        raise
    save_outputs(s, run_dir, state, info)
    from lamina.registry.tracking import log_run

    log_run(run_dir)  # the MLflow record: params, provenance hashes, metrics, artifacts
    return run_dir


def save_outputs(s: Setup, run_dir: Path, state: LoopState, info: dict) -> None:
    with atomic_dir(run_dir / s.method.ARTIFACT, replace=True) as tmp:
        s.method.save(s.model, tmp)
    with atomic_dir(run_dir / "tokenizer", replace=True) as tmp:
        s.tokenizer.save_pretrained(tmp)
    save_extra = getattr(s.loop.objective, "save", None)
    if save_extra:  # e.g. a reward model's scalar head
        save_extra(s.model, run_dir)
    history = read_metrics(run_dir)
    if history:
        plot_loss(history, run_dir / "loss.png")
    info.update(status="completed", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), steps=state.step,
                tokens=state.tokens, loss_tokens=state.loss_tokens, train_seconds=round(state.seconds, 3),
                final_loss=history[-1]["loss"] if history else None)
    write_json(run_dir / "run.json", info)


def run_info(s: Setup, run_dir: Path, started: str | None) -> dict:
    return {
        "id": run_dir.name,
        "name": s.recipe.name,
        "status": "running",
        "user": workspace.user(),
        "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": s.recipe.seed,
        "objective": s.recipe.train.objective,
        "method": s.recipe.method.model_dump(mode="json"),
        "base": {"ref": s.recipe.model.base, "path": str(s.base_dir), "allow_pickle": s.recipe.model.allow_pickle,
                 **hash_model_files(s.base_dir)},
        "data": {**s.data.info, **s.data_stats},
        "device": str(s.device),
        "attention": s.loop.plan,
        "precision": s.loop.precision(),
        "total_steps": s.loop.total_steps,
        "code": code_version(),
        "versions": library_versions(),
    }


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"


def resume(run_dir: Path, progress: bool = True) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or not (run_dir / "recipe.yaml").is_file():
        raise LaminaError("not a Lamina run directory (no run.json / recipe.yaml)", str(run_dir))
    meta = read_json(run_dir / "run.json")
    if meta.get("status") == "completed":
        raise LaminaError("this run already completed; nothing to resume", str(run_dir))
    return train(load_recipe(run_dir / "recipe.yaml"), progress, run_dir=run_dir, resume=True)
