"""Fused GPU kernels for the decoder's element-wise work (RMSNorm, RoPE, SwiGLU).

Lamina uses Liger's Triton kernels when the `liger-kernel` package is installed (the `gpu`
extra) and the model runs on CUDA: they cut the activation memory these layers save for the
backward pass and the time spent in memory-bound element-wise ops. The LM head and loss are
Lamina's own (labelled positions only), so Liger's loss kernels are left off.
"""

from __future__ import annotations

import importlib.util

import torch

from lamina.errors import LaminaError


def available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available()


def apply(model, setting: str = "auto") -> bool:
    """Patch `model` in place per `setting` (auto | on | off); True when kernels were applied."""
    if setting == "off" or (setting == "auto" and not (available() and model.device.type == "cuda")):
        return False
    if not available():
        raise LaminaError("train.fused_kernels is `on` but liger-kernel is not installed or no CUDA device is "
                          "present (pip install 'lamina[gpu]')", "train.fused_kernels")
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model.config.model_type)
    if patch is None:
        if setting == "on":
            raise LaminaError(f"no fused kernels for model type {model.config.model_type!r}", "train.fused_kernels")
        return False
    patch(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=model)
    return True
