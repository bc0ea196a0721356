"""Full fine-tuning: every parameter trains; the artifact is a whole checkpoint."""

from __future__ import annotations

from pathlib import Path

from lamina.methods import lora_fused

ARTIFACT = "model"
MERGEABLE = True


def apply(model, spec):
    for p in model.parameters():
        p.requires_grad_(True)
    lora_fused.install(model)  # the SwiGLU MLP node: keeps gate and up, not their product
    return model


def save(model, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)


def load(base_model, directory: Path):
    from lamina.models.loading import load_hf_model

    return load_hf_model(directory, device=base_model.device, dtype=base_model.dtype)


def merge(model):
    return model


def overhead(spec) -> str:
    return "none"
