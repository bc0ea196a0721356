"""LoRA through PEFT: its on-disk format is what vLLM, TGI and LoRAX load."""

from __future__ import annotations

from pathlib import Path

from lamina.methods import lora_fused

ARTIFACT = "adapter"
MERGEABLE = True


def apply(model, spec):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = get_peft_model(model, config)
    lora_fused.install(model)
    return model


def save(model, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)


def load(base_model, directory: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)


def merge(model):
    return model.merge_and_unload()


def overhead(spec) -> str:
    return "none once merged (unmerged: a rank-r side path per target module)"
