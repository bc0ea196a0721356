"""BitFit: only bias terms train.

Llama-family linear layers have no bias, so BitFit gives each targeted layer inside the
decoder a zero-initialised trainable bias (the model starts as exactly the base). The added
bias is a parameter `lamina_bias` on the layer, added to its output by a forward hook, kept in
fp32 whatever the base's dtype. Biases the base already has are made trainable in place. The
artifact is `bitfit.safetensors` (the biases only) plus `bitfit.json`. Merging moves the
biases into the layers' own `bias` and switches the config's bias flags on, so the merged
directory loads as a plain transformers model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lamina.errors import LaminaError
from lamina.fsio import read_json, write_json

ARTIFACT = "adapter"
MERGEABLE = True
WEIGHTS, CONFIG = "bitfit.safetensors", "bitfit.json"
# Config switches that give a family's linear layers a bias when it loads a merged model.
BIAS_FLAGS = {".self_attn.": "attention_bias", ".mlp.": "mlp_bias"}


def overhead(spec) -> str:
    return "none once merged (unmerged: one bias add per target layer)"


def targets(model, target_modules) -> list[tuple[str, torch.nn.Linear]]:
    decoder = model.get_decoder()
    prefix = next(n for n, m in model.named_modules() if m is decoder)
    found = []
    for name, module in decoder.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".layers." not in f".{name}":
            continue
        if target_modules == "all-linear" or name.rsplit(".", 1)[-1] in target_modules:
            found.append((f"{prefix}.{name}" if prefix else name, module))
    if not found:
        raise LaminaError(f"no linear layer in the decoder matches {target_modules}", "method.target_modules")
    return found


def _add_bias(module: torch.nn.Linear, value: torch.Tensor | None = None) -> None:
    init = torch.zeros(module.out_features, dtype=torch.float32, device=module.weight.device)
    module.lamina_bias = torch.nn.Parameter(init if value is None else value.to(init))
    module.lamina_bias_hook = module.register_forward_hook(
        lambda mod, args, out: out + mod.lamina_bias.to(out.dtype)
    )


def _insert(model, target_modules, existing_only: set[str] | None = None) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    added, existing = [], []
    for name, module in targets(model, target_modules):
        if module.bias is not None:
            module.bias.requires_grad_(True)
            existing.append(name)
        else:
            _add_bias(module)
            added.append(name)
    return {"target_modules": target_modules, "added": added, "existing": existing}


def apply(model, spec):
    model.lamina_bitfit = _insert(model, spec.target_modules)
    return model


def bias_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save(model, directory: Path) -> None:
    save_file(bias_state(model), str(Path(directory) / WEIGHTS))
    write_json(Path(directory) / CONFIG, model.lamina_bitfit)


def load(base_model, directory: Path):
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise LaminaError(f"needs {CONFIG} and {WEIGHTS}", str(directory))
    settings = read_json(directory / CONFIG)
    layout = _insert(base_model, settings["target_modules"])
    if layout["added"] != settings["added"]:
        raise LaminaError(
            "the biases were trained for layers this base does not have", str(directory / CONFIG)
        )
    saved = load_file(str(directory / WEIGHTS))
    params = dict(base_model.named_parameters())
    if set(saved) != set(bias_state(base_model)):
        raise LaminaError("tensors do not match the bias layout", str(directory / WEIGHTS))
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    base_model.lamina_bitfit = layout
    base_model.requires_grad_(False)
    return base_model


def merge(model):
    """Fold the added biases into the layers' own `bias` and switch the config flags on."""
    config = model.config
    added = model.lamina_bitfit["added"]
    stray = [n for n in added if not any(part in n for part in BIAS_FLAGS)]
    groups = {flag for part, flag in BIAS_FLAGS.items() for name in added if part in name}
    missing = [flag for flag in sorted(groups) if not hasattr(config, flag)]
    if stray or missing:
        raise LaminaError(
            f"{type(model).__name__} has no config switch for biases on "
            f"{', '.join(stray[:3] or missing)}; serve it unmerged",
            "method",
        )
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Linear) or ".layers." not in name:
            continue
        flag = next((f for part, f in BIAS_FLAGS.items() if part in name), None)
        if flag not in groups:
            continue
        value = getattr(module, "lamina_bias", None)
        if value is not None:
            module.lamina_bias_hook.remove()
            del module.lamina_bias, module.lamina_bias_hook
        if module.bias is None:  # every layer the flag covers gets a bias (zero where none was trained)
            zero = torch.zeros(module.out_features, dtype=module.weight.dtype, device=module.weight.device)
            module.bias = torch.nn.Parameter(zero if value is None else value.detach().to(zero))
    for flag in groups:
        setattr(config, flag, True)
    return model
