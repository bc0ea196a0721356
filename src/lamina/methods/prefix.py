"""Prefix tuning through PEFT: trainable key/value prefixes in every attention layer."""

from __future__ import annotations

from pathlib import Path

from lamina.errors import LaminaError
from lamina.methods import virtual
from lamina.methods.lora import save  # noqa: F401  (the PEFT adapter format)

ARTIFACT = "adapter"
MERGEABLE = False


def overhead(spec) -> str:
    return f"+{spec.num_virtual_tokens} key/value positions per layer"


def apply(model, spec):
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=spec.num_virtual_tokens,
        prefix_projection=spec.projection,
        encoder_hidden_size=spec.projection_hidden or model.config.hidden_size,
    )
    return virtual.attach(get_peft_model(model, config))


def load(base_model, directory: Path):
    from peft import PeftModel

    # PEFT saves the projected prefix, so a loaded adapter needs no projection network.
    return virtual.attach(PeftModel.from_pretrained(base_model, str(directory), is_trainable=False))


def merge(model):
    raise LaminaError(
        "prefix tuning cannot be merged: its prefix keys/values are extra attention positions", "method"
    )
