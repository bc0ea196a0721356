"""Loading base models and tokenizers that exist — safetensors only, every file hashed.

A base is a local Hugging Face directory or a hub id (resolved through the local hub cache;
nothing is downloaded when offline). A directory whose weights exist only as pickle files is
refused unless the recipe allows pickle. `tiny`, the embedded default, is built by a training
job (lamina.train.tiny_base); a trained run (base + artifact) is loaded by
lamina.methods.trained, above the methods.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lamina.errors import LaminaError
from lamina.fsio import sha256_bytes, sha256_file
from lamina.governance import at_rest

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "added_tokens.json",
)


def pick_device(requested: str | None = None) -> torch.device:
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        from lamina.models.cpu import configure_threads

        configure_threads()
    return device


def resolve_base(ref: str, revision: str | None = None) -> Path:
    """A local directory for a base-model reference, or a clear error."""
    if ref == "tiny":  # built by training, not here: models only load what exists
        raise LaminaError("`tiny` is built by lamina.train.tiny_base.resolve_base, not by the loader", "model.base")
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise LaminaError("is a file; a base model must be a Hugging Face model directory", "model.base")
    looks_like_hub_id = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise LaminaError(f"no such model directory: {ref}", "model.base")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(ref, revision=revision, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    except Exception as e:
        raise LaminaError(f"could not resolve hub model {ref!r}: {type(e).__name__}: {e}", "model.base") from None
    return Path(local)


def check_weights(path: Path, allow_pickle: bool) -> bool:
    """True when the directory has safetensors weights; refuses pickle-only directories."""
    files = [p for p in path.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return True
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise LaminaError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); pickle can run code when loaded. "
            "Convert them to safetensors, or set `model.allow_pickle: true` if you trust the source.",
            "model.base",
        )
    if not pickles:
        raise LaminaError(f"{path} has no model weights (*.safetensors)", "model.base")
    return False


def hash_model_files(path: Path) -> dict:
    """sha256 of every weight and config file, the tokenizer files, and the chat template."""
    path = Path(path)
    files, tok = {}, {}
    for p in sorted(path.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        name = at_rest.plain_name(p)  # weights stored encrypted count by their plaintext
        if name in TOKENIZER_FILES:
            tok[name] = sha256_file(p)
        elif Path(name).suffix in (".safetensors", ".json") + PICKLE_SUFFIXES and name != at_rest.MANIFEST:
            files[name] = at_rest.plain_sha256(p.with_name(name))
    template = None
    if (path / "tokenizer_config.json").is_file() or (path / "chat_template.jinja").is_file():
        tokenizer = load_tokenizer(path)
        if tokenizer.chat_template:
            template = sha256_bytes(str(tokenizer.chat_template).encode())
    return {"files": files, "tokenizer_files": tok, "chat_template_sha256": template}


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise LaminaError(f"could not load a tokenizer from {path}: {e}", "model.base") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf_model(path: Path, device: torch.device | None = None, dtype: torch.dtype | None = None,
                  allow_pickle: bool = False, attn: str = "sdpa"):
    from lamina.registry.signing import check_before_load

    path = Path(path)
    check_before_load(path)  # bases too: a registered checkpoint trained on must still verify
    with at_rest.plain_view(path) as plain:  # weights stored encrypted: decrypted for this load only
        return _load_hf_model(plain, device, dtype, allow_pickle, attn)


def _load_hf_model(path: Path, device: torch.device | None, dtype: torch.dtype | None, allow_pickle: bool,
                   attn: str):
    from transformers import AutoModelForCausalLM

    safe = check_weights(path, allow_pickle)
    device = device or pick_device()
    dtype = dtype or torch.float32
    if attn == "lamina_varlen":
        from lamina.models.attention import register

        register()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, use_safetensors=safe, attn_implementation=attn
        )
    except Exception as e:
        raise LaminaError(f"could not load a causal LM from {path}: {type(e).__name__}: {e}", "model.base") from None
    return model.to(device)

