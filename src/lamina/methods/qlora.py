"""QLoRA: the base frozen in 4-bit (NF4, double quantisation) through bitsandbytes, LoRA on top.

The runner loads the base through `load_base`, straight into 4-bit. Given a full-precision
base instead (`apply` from elsewhere, `load` of a run), QLoRA reloads it quantised from the
same directory, releasing the full-precision copy first. The adapter is saved in PEFT's format, with the quantisation settings beside it so a
load puts it on the same 4-bit base it was trained on. Merging dequantises the base into a
full-precision model and folds the LoRA update into that.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lamina.errors import LaminaError
from lamina.fsio import read_json, write_json
from lamina.governance import at_rest
from lamina.methods import lora

ARTIFACT = "adapter"
MERGEABLE = True
SETTINGS = "lamina_qlora.json"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def overhead(spec) -> str:
    return "none once merged (unmerged: 4-bit dequantisation + a rank-r side path per target module)"


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise LaminaError("QLoRA needs bitsandbytes: pip install bitsandbytes", "method.name") from None
    return bitsandbytes


def load_quantized(path: str, device: torch.device, settings: dict, attn: str):
    """The causal LM at `path` with its linear layers in 4-bit; other weights in the compute dtype."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    _bitsandbytes()
    compute = DTYPES[settings["compute_dtype"]]
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings["quant_type"],
        bnb_4bit_use_double_quant=settings["double_quant"],
        bnb_4bit_compute_dtype=compute,
    )
    where = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    if attn != "sdpa":  # Lamina's varlen kernel must be known before transformers checks the name
        from lamina.models.attention import register

        register()
    try:
        with at_rest.plain_view(path) as plain:  # a base stored encrypted: decrypted for this load only
            model = AutoModelForCausalLM.from_pretrained(
                str(plain), quantization_config=config, dtype=compute, device_map={"": where}, attn_implementation=attn
            )
    except LaminaError:
        raise
    except Exception as e:
        raise LaminaError(f"could not load {path} in 4-bit: {type(e).__name__}: {e}", "method") from None
    for module in model.modules():
        # bitsandbytes' CPU inference shortcut repacks the weights in place and computes in bf16
        # whatever the compute dtype; the model must compute at inference what it trained with.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def _settings(spec) -> dict:
    return {
        "quant_type": spec.quant_type,
        "double_quant": spec.double_quant,
        "compute_dtype": spec.compute_dtype,
    }


def _requantize(model, settings: dict):
    path = model.name_or_path
    if not path or not Path(path).is_dir():
        raise LaminaError("QLoRA needs a base loaded from a model directory", "model.base")
    device, attn = model.device, model.config._attn_implementation
    model.to("meta")  # drop the full-precision weights before the 4-bit copy is built
    quantized = load_quantized(path, device, settings, attn)
    quantized.lamina_qlora = settings
    return quantized


def load_base(path: Path, device: torch.device, spec, allow_pickle: bool, attn: str):
    """The base loaded straight into 4-bit (the runner's hook: no full-precision copy first)."""
    from lamina.models.loading import check_weights

    if not check_weights(Path(path), allow_pickle):
        raise LaminaError("QLoRA loads safetensors weights only", "model.base")
    model = load_quantized(str(path), device, _settings(spec), attn)
    model.lamina_qlora = _settings(spec)
    return model


def apply(model, spec):
    from peft import LoraConfig, get_peft_model

    settings = _settings(spec)
    if getattr(model, "lamina_qlora", None) != settings:
        model = _requantize(model, settings)
    # The base is frozen; its norms and embeddings stay in the compute dtype. (PEFT's
    # prepare_model_for_kbit_training upcasts them to fp32, which makes every hidden state
    # fp32: twice the activation memory, and the flash kernels refuse it.)
    model.requires_grad_(False)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    if spec.optimizer == "paged_adamw_8bit":
        peft_model.lamina_optimizer = paged_adamw_8bit
    return peft_model


def paged_adamw_8bit(params: list, spec, device: torch.device):
    """bitsandbytes' 8-bit AdamW with paged state, with the same decay groups as the default."""
    bnb = _bitsandbytes()
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return bnb.optim.PagedAdamW8bit(
        [g for g in groups if g["params"]], lr=spec.lr, betas=spec.betas, eps=spec.eps
    )


def save(model, directory: Path) -> None:
    lora.save(model, directory)
    write_json(Path(directory) / SETTINGS, model.get_base_model().lamina_qlora)


def load(base_model, directory: Path):
    from peft import PeftModel

    settings_file = Path(directory) / SETTINGS
    if not settings_file.is_file():
        raise LaminaError(f"no {SETTINGS}: not a QLoRA adapter", str(directory))
    quantized = _requantize(base_model, read_json(settings_file))
    return PeftModel.from_pretrained(quantized, str(directory), is_trainable=False)


def dequantized_state(base) -> dict[str, torch.Tensor]:
    """The base's weights in fp32, 4-bit layers expanded exactly as their forward expands them."""
    import bitsandbytes.functional as bnbf

    state = {}
    for module_name, module in base.named_modules():
        if "lora_" in module_name:
            continue
        for name, p in module.named_parameters(recurse=False):
            key = f"{module_name}.{name}".replace(".base_layer", "") if module_name else name
            quant = getattr(p, "quant_state", None)
            value = bnbf.dequantize_4bit(p.data, quant) if quant is not None else p.data
            state[key] = value.float()
    return state


def merge(model):
    """A plain fp32 model: dequantised base with the LoRA update folded in."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    base = model.get_base_model()
    config_dict = base.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(dequantized_state(base), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise LaminaError(
            f"dequantised weights do not fit the base: missing {missing}, unexpected {unexpected}", "method"
        )
    plain.tie_weights()
    plain = plain.to(next(model.parameters()).device)
    lora_config = model.peft_config[model.active_adapter]
    unmerged = get_peft_model(plain, lora_config)
    set_peft_model_state_dict(unmerged, get_peft_model_state_dict(model))
    return unmerged.merge_and_unload()
