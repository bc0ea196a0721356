"""Everything before a run's first step: seed, data, tokens, base, method, objective, loop.

Everything that can fail on bad input (recipe, data, base model, tokenisation) fails here,
before the run directory exists, so a bad run leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lamina import methods
from lamina.data.chat import tokenize_examples
from lamina.data.dataset import TrainingData, load_training_data
from lamina.data.pairs import tokenize_pairs
from lamina.data.unpaired import tokenize_unpaired
from lamina.models import kernels
from lamina.models.attention import attention_plan
from lamina.models.loading import load_hf_model, load_tokenizer, pick_device
from lamina.recipe import Recipe
from lamina.train import distributed
from lamina.train.build_loop import make_loop
from lamina.train.loop import Loop
from lamina.train.objectives.build import build_objective
from lamina.train.objectives.sft import SFT
from lamina.train.seeding import seed_everything
from lamina.train.tiny_base import resolve_base


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


def setup(recipe: Recipe, d: distributed.Dist | None = None) -> Setup:
    """Everything before the first step. Raises LaminaError on bad input; writes nothing
    (under torchrun, rank 0 takes the data in and the others read the version it made)."""
    seed_everything(recipe.seed)
    data = distributed.take_in(d, recipe, load_training_data)
    base_dir = resolve_base(recipe.model.base, recipe.model.revision)
    device = d.device if d else pick_device()
    plan, attn = attention_plan(device)
    method = methods.get(recipe.method.name)
    # Frozen bases are stored in bf16 on CUDA; full fine-tuning keeps fp32 master weights.
    dtype = torch.bfloat16 if device.type == "cuda" and recipe.method.name != "full" else torch.float32
    tokenizer = load_tokenizer(base_dir)
    preference = recipe.train.objective in ("dpo", "reward", "kto", "orpo", "simpo")
    if recipe.train.objective == "kto":  # unpaired records, not pairs
        examples, stats = tokenize_unpaired(tokenizer, data.train, recipe.data, recipe.data.train)
    elif preference:
        examples, stats = tokenize_pairs(tokenizer, data.train, recipe.data, recipe.data.train)
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
    objective = build_objective(recipe, model, plan) if preference else SFT
    if d:  # after the objective, whose frozen DPO reference copies the unwrapped model
        d.wrap(model, recipe.method.name, distributed.precision(recipe.train, device))
    loop = make_loop(model, examples, recipe.train, device, plan, recipe.seed, recipe.data.max_length, objective)
    loop.dist = d
    return Setup(recipe, data, base_dir, tokenizer, model, loop, method, device, stats)
