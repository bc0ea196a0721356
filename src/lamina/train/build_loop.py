"""Building the training loop for a model and its examples: micro-batch budget, optimiser,
token-budget sampler and step count."""

from __future__ import annotations

import math

from lamina.data.chat import Tokenized
from lamina.data.packing import StepSampler
from lamina.errors import LaminaError
from lamina.recipe import TrainSpec
from lamina.train import memory
from lamina.train.loop import Loop
from lamina.train.objectives.sft import SFT
from lamina.train.optim import build_optimizer


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
