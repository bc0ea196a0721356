"""Prompt tuning through PEFT: trainable virtual-token embeddings in front of every example."""

from __future__ import annotations

from pathlib import Path

from lamina.errors import LaminaError
from lamina.methods import virtual
from lamina.methods.lora import save  # noqa: F401  (the PEFT adapter format)

ARTIFACT = "adapter"
MERGEABLE = False


def overhead(spec) -> str:
    return f"+{spec.num_virtual_tokens} tokens per sequence"


def apply(model, spec):
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    init = {}
    if spec.init_text:
        if not model.name_or_path:
            raise LaminaError("init_text needs the base model's tokenizer directory", "method.init_text")
        init = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": spec.init_text,
            "tokenizer_name_or_path": model.name_or_path,
        }
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.num_virtual_tokens, **init)
    return virtual.attach(get_peft_model(model, config))


def load(base_model, directory: Path):
    from peft import PeftModel

    return virtual.attach(PeftModel.from_pretrained(base_model, str(directory), is_trainable=False))


def merge(model):
    raise LaminaError(
        "prompt tuning cannot be merged: its virtual tokens are extra input, not a weight change", "method"
    )
