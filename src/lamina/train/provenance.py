"""What run.json records about how a run was made: code commit, library versions, base,
data, device and plan."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch

from lamina import workspace
from lamina.models.loading import hash_model_files
from lamina.train.setup import Setup


def code_version() -> dict:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit or None, "dirty": dirty}


def library_versions() -> dict:
    import peft
    import transformers

    import lamina

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "lamina": lamina.__version__}


def run_info(s: Setup, run_dir: Path, started: str | None) -> dict:
    return {
        "id": run_dir.name,
        "name": s.recipe.name,
        "status": "running",
        "user": workspace.user(),
        "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": s.recipe.seed,
        "objective": s.recipe.train.objective,
        "method": s.recipe.method.model_dump(mode="json"),
        "base": {"ref": s.recipe.model.base, "path": str(s.base_dir), "allow_pickle": s.recipe.model.allow_pickle,
                 **hash_model_files(s.base_dir), **_template_used(s)},
        "data": {**s.data.info, **s.data_stats},
        "device": str(s.device),
        "attention": s.loop.plan,
        "precision": s.loop.precision(),
        "total_steps": s.loop.total_steps,
        "code": code_version(),
        "versions": library_versions(),
    }


def _template_used(s) -> dict:
    """A chat template the recipe supplied replaces the base's (none) in the record."""
    if not s.recipe.model.chat_template:
        return {}
    from lamina.fsio import sha256_bytes

    return {"chat_template_sha256": sha256_bytes(str(s.tokenizer.chat_template).encode()),
            "chat_template_file": s.recipe.model.chat_template}
