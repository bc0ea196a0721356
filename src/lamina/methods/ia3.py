"""IA3 through PEFT: learned rescaling vectors on keys, values and feed-forward inputs."""

from __future__ import annotations

from pathlib import Path

from lamina.errors import LaminaError
from lamina.methods.lora import save  # noqa: F401  (the PEFT adapter format)

ARTIFACT = "adapter"
MERGEABLE = True


def overhead(spec) -> str:
    return "none once merged (unmerged: one elementwise scale per target module)"


def apply(model, spec):
    from peft import IA3Config, get_peft_model

    try:
        config = IA3Config(
            task_type="CAUSAL_LM",
            target_modules=spec.target_modules,
            feedforward_modules=spec.feedforward_modules,
        )
        return get_peft_model(model, config)
    except ValueError as e:
        raise LaminaError(f"IA3 cannot be set up on this model: {e}", "method.target_modules") from None


def load(base_model, directory: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)


def merge(model):
    return model.merge_and_unload()
