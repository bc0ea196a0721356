"""Everything before a run's first step: seed, data, tokens, base, method, objective, loop.

Everything that can fail on bad input (recipe, output directory, base model and its chat
template, data, tokenisation) fails here, before anything is written: the taken-in data is
staged, and the caller commits it once set-up has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lamina import methods, rundir
from lamina.data.chat import tokenize_examples
from lamina.data.dataset import TrainingData, load_training_data
from lamina.data.pairs import tokenize_pairs
from lamina.data.unpaired import tokenize_unpaired
from lamina.errors import LaminaError
from lamina.models import kernels
from lamina.models.attention import attention_plan
from lamina.models.loading import check_weights, load_hf_model, load_tokenizer, pick_device
from lamina.recipe import Recipe
from lamina.registry import tracking
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


def setup(recipe: Recipe, d: distributed.Dist | None = None, new_output: bool = True) -> Setup:
    """Everything before the first step. Raises LaminaError on bad input; writes nothing —
    the taken-in data waits in `data.commit()` until the caller has checked it all (under
    torchrun, rank 0 takes the data in at once and the others read the version it made).
    `new_output` False: the run directory exists already (a resume)."""
    seed_everything(recipe.seed)
    if new_output:
        rundir.check_output(recipe)
    tracking.check_reachable()  # the run is logged there when it ends
    # A named base is checked before the (slower) intake; the embedded one is built after it.
    base = None if recipe.model.base == "tiny" else open_base(recipe)
    if d is None:
        data = load_training_data(recipe, defer_commit=True)
    else:
        data = distributed.take_in(d, recipe, load_training_data)
    try:
        base_dir, tokenizer = base or open_base(recipe)
        return _build(recipe, data, base_dir, tokenizer, d)
    except BaseException:
        data.discard()
        raise


def open_base(recipe: Recipe) -> tuple[Path, object]:
    """The base directory and its tokenizer, with a chat template, or a clear error."""
    base_dir = resolve_base(recipe.model.base, recipe.model.revision)
    check_weights(base_dir, recipe.model.allow_pickle)
    tokenizer = load_tokenizer(base_dir)
    use_chat_template(tokenizer, recipe.model.chat_template, base_dir)
    return base_dir, tokenizer


def use_chat_template(tokenizer, template_file: str | None, base_dir: Path) -> None:
    if template_file:
        path = Path(template_file)
        if not path.is_file():
            raise LaminaError(f"no such chat-template file: {path}", "model.chat_template")
        try:
            tokenizer.chat_template = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise LaminaError(f"{path} is not UTF-8 text", "model.chat_template") from None
    if not tokenizer.chat_template:
        raise LaminaError(
            f"the tokenizer of {base_dir} has no chat template; set `model.chat_template` to a Jinja "
            "template file (e.g. the chat_template.jinja of a chat model of the same family)",
            "model.chat_template",
        )


def _build(recipe: Recipe, data: TrainingData, base_dir: Path, tokenizer, d: distributed.Dist | None) -> Setup:
    device = d.device if d else pick_device()
    plan, attn = attention_plan(device)
    method = methods.get(recipe.method.name)
    # Frozen bases are stored in bf16 on CUDA; full fine-tuning keeps fp32 master weights.
    dtype = torch.bfloat16 if device.type == "cuda" and recipe.method.name != "full" else torch.float32
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
