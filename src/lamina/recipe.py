"""The recipe: a YAML file validated by the pydantic models below.

This module is the only place defaults live. Unknown keys and wrong types fail before
anything runs, with the key's dotted path (`train.lr: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lamina.errors import LaminaError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    base: str = Field("tiny", description="A local Hugging Face directory, a hub id, or `tiny` (embedded).")
    allow_pickle: bool = False
    revision: str | None = None


class DataSpec(Strict):
    train: str = Field(..., description="JSONL file of training records.")
    eval: str | None = Field(None, description="JSONL file of held-out records (same format).")
    format: Literal["chat", "prompt_completion", "preference"] = "chat"
    loss_on: Literal["assistant", "all"] = "assistant"
    max_length: int = Field(512, gt=8)
    overlong: Literal["truncate", "drop"] = "drop"


class FullSpec(Strict):
    name: Literal["full"] = "full"


class LoraSpec(Strict):
    name: Literal["lora"] = "lora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


MethodSpec = Annotated[FullSpec | LoraSpec, Field(discriminator="name")]


class TrainSpec(Strict):
    objective: Literal["sft", "lm"] = Field(
        "sft", description="`sft`: loss on labelled (assistant) tokens; `lm`: plain language modelling."
    )
    tokens_per_step: int = Field(4096, gt=0, description="Token budget of one optimiser step.")
    micro_tokens: int | None = Field(
        None, gt=0, description="Token budget of one forward/backward; defaults to tokens_per_step."
    )
    steps: int | None = Field(None, gt=0, description="Optimiser steps; defaults to `epochs` over the data.")
    epochs: float = Field(1.0, gt=0)
    max_seconds: float | None = Field(None, gt=0, description="Stop after this much wall time.")
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(0, ge=0, description="Steps between resumable checkpoints; 0 = only at the end.")
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _micro_fits(self) -> TrainSpec:
        if self.micro_tokens is not None and self.micro_tokens > self.tokens_per_step:
            raise ValueError("micro_tokens must not exceed tokens_per_step")
        return self


class OutputSpec(Strict):
    dir: str | None = Field(None, description="Run directory; default: <workspace>/runs/<name>-<time>.")


class Recipe(Strict):
    name: str = "run"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    data: DataSpec
    method: MethodSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = TrainSpec()
    output: OutputSpec = OutputSpec()


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        # Drop the discriminator tag pydantic inserts into union paths (method.lora.r -> method.r).
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in _METHOD_TAGS)]
        key = ".".join(loc) or "(recipe)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


_METHOD_TAGS = {"full", "lora"}


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise LaminaError("a recipe must be a YAML mapping", source)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise LaminaError(_format_errors(e, source)) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise LaminaError("no such recipe file", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LaminaError(f"not valid YAML: {getattr(e, 'problem', e)}", where) from None
    recipe = parse_recipe(data, str(path))
    # Relative data paths are relative to the recipe file, as a user would expect.
    base = path.parent
    for key in ("train", "eval"):
        value = getattr(recipe.data, key)
        if value and not Path(value).is_absolute() and not Path(value).exists():
            setattr(recipe.data, key, str((base / value).resolve()))
    return recipe
