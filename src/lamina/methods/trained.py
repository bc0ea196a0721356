"""Loading a trained run: its base model with the method's artifact put on top.

Above the methods (it asks lamina.methods which one made the artifact) and above
lamina.models.loading (which loads bases that exist). A path that is not a run directory is
loaded as a plain Hugging Face model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lamina import methods, rundir
from lamina.errors import LaminaError
from lamina.governance import at_rest
from lamina.models.loading import hash_model_files, load_hf_model, load_tokenizer, resolve_base
from lamina.registry.signing import check_before_load


def load_model(path: str | Path, allow_pickle: bool = False, device: torch.device | None = None,
               dtype: torch.dtype | None = None, attn: str = "sdpa"):
    """(model, tokenizer) for a Hugging Face directory or a Lamina run directory.

    A run directory loads its base and puts the trained artifact on top (an adapter is not
    merged; use `lamina merge` for that).
    """
    path = Path(path)
    if path.is_dir():
        check_before_load(path)  # a signed or registered directory must verify before any load
    if rundir.is_run_dir(path):
        run = rundir.read_run(path)
        method = methods.get(run["method"]["name"])
        artifact = path / method.ARTIFACT
        if not artifact.is_dir():
            raise LaminaError(f"run {path} has no {method.ARTIFACT}/ (did it finish?)", str(path))
        base_dir = Path(run["base"]["path"])
        if not base_dir.is_dir():
            raise LaminaError(f"the run's base model {base_dir} is gone", str(path / rundir.RUN_JSON))
        tokenizer = load_tokenizer(path / rundir.TOKENIZER if (path / rundir.TOKENIZER).is_dir() else base_dir)
        if method.ARTIFACT == "model":  # a whole checkpoint: the base is not needed
            return load_hf_model(artifact, device, dtype, False, attn), tokenizer
        check_before_load(base_dir)  # a base stored in the registry is signed
        check_base(base_dir, run["base"], path)
        base = load_hf_model(base_dir, device, dtype, run["base"].get("allow_pickle", False), attn)
        with at_rest.plain_view(artifact) as plain:  # an adapter stored encrypted: decrypted for this load
            return method.load(base, plain), tokenizer
    base_dir = resolve_base(str(path))
    return load_hf_model(base_dir, device, dtype, allow_pickle, attn), load_tokenizer(base_dir)


def check_base(base_dir: Path, recorded: dict, run_dir: Path) -> None:
    """An adapter is only what it was trained to be on the base it was trained on: refuse a
    base whose weights, config or tokenizer files differ from the sha256s run.json recorded
    (a zeroed tensor, an edited config.json). Hashing costs a read of the base per load."""
    if not recorded.get("files"):
        return  # a run from before Lamina recorded its base's hashes
    actual = hash_model_files(base_dir)
    problems = []
    for kind in ("files", "tokenizer_files"):
        want, have = recorded.get(kind) or {}, actual.get(kind) or {}
        problems += [f"changed {n}" for n in want if n in have and have[n] != want[n]]
        problems += [f"missing {n}" for n in want if n not in have]
        problems += [f"added {n}" for n in have if n not in want]
    if problems:
        raise LaminaError(
            f"the base model differs from the one this run was trained on ({'; '.join(problems)}): "
            "refusing to put the adapter on it",
            str(base_dir),
        )
