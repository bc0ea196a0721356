"""A released model depends on its base: the base is stored signed when it lives under runs/,
and an adapter refuses a base whose files differ from the hashes recorded at training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from registry_runs import make_run

from lamina import rundir
from lamina.errors import LaminaError
from lamina.methods.trained import check_base
from lamina.models.loading import hash_model_files
from lamina.registry import signing, versions


def _merged_stage_base(tiny_random, workspace) -> Path:
    """An earlier stage's merged model, where the trainer leaves it: under the workspace's runs/."""
    base = rundir.runs_root() / "sft-run" / "merged"
    shutil.copytree(tiny_random, base)
    return base


def test_a_base_under_runs_is_stored_signed_and_the_version_reads_that_copy(tiny_random, workspace, tmp_path):
    base = _merged_stage_base(tiny_random, workspace)
    run = make_run(tmp_path, "run-dpo", base_path=str(base), logged=False)
    info = json.loads((run / "run.json").read_text())
    info["base"].update(hash_model_files(base))
    (run / "run.json").write_text(json.dumps(info))
    from lamina.registry import tracking

    tracking.log_run(run)
    version = Path(versions.register(run, "tickets")["path"])
    stored = Path(json.loads((version / "run.json").read_text())["base"]["path"])
    assert stored.parent == versions.registry_root() / ".bases" and signing.verify_dir(stored)
    lineage = json.loads((version / "lineage.json").read_text())
    assert lineage["base"]["stored_from"] == str(base) and lineage["base"]["path"] == str(stored)
    # The run directory can now change or go: the version does not depend on it.
    shutil.rmtree(base.parent)
    check_base(stored, info["base"], version)
    # The stored copy itself is signed: an edit is caught before any load.
    (stored / "config.json").write_text("{}")
    with pytest.raises(LaminaError, match=r"signature check failed: changed file config.json"):
        signing.check_before_load(stored)


@pytest.mark.parametrize("edit", ["config", "weights", "tokenizer"])
def test_adapter_refuses_a_base_that_differs_from_training(tiny_random, tmp_path, edit):
    base = tmp_path / "base"
    shutil.copytree(tiny_random, base)
    recorded = hash_model_files(base)
    check_base(base, recorded, tmp_path)  # unchanged: accepted
    if edit == "config":
        config = json.loads((base / "config.json").read_text())
        config["rms_norm_eps"] = 0.1
        (base / "config.json").write_text(json.dumps(config))
        name = "config.json"
    elif edit == "weights":
        data = bytearray((base / "model.safetensors").read_bytes())
        data[-4:] = b"\0\0\0\0"
        (base / "model.safetensors").write_bytes(bytes(data))
        name = "model.safetensors"
    else:
        (base / "tokenizer.json").write_text((base / "tokenizer.json").read_text().replace("<|end|>", "<|fin|>"))
        name = "tokenizer.json"
    with pytest.raises(LaminaError, match=rf"the base model differs from the one this run was trained on \(changed {name}\)"):
        check_base(base, recorded, tmp_path)
