"""A resumed run trains on exactly what the run started on: the inputs recorded by hash at
its start (inputs.json), never the recipe's files taken in again — with and without a named
eval file — and a run that cannot be resumed that way is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from helpers import recipe_dict, write_task
from sqlalchemy import select

from killpoints import lamina_cli, lamina_main
from lamina.data import catalog
from lamina.data.intake import prepare_for_training
from lamina.errors import LaminaError
from lamina.recipe import load_recipe, parse_recipe
from lamina.train import runner


def _write(tmp_path, tiny_random, train_file, eval_file, name):
    d = recipe_dict(tiny_random, train_file, steps=6, checkpoint_every=3, lr=5e-3)
    if eval_file:
        d["data"]["eval"] = str(eval_file)
    d["output"] = {"dir": str(tmp_path / name)}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(d))
    return tmp_path / f"{name}.yaml"


def _losses(run_dir):
    return [(m["step"], m["loss"]) for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("with_eval", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_a_resumed_run_has_the_uninterrupted_runs_data_and_lineage(tiny_random, tmp_path, monkeypatch,
                                                                   with_eval):
    monkeypatch.setenv("LAMINA_USER", "t")  # the workspace's admin, in this process and the CLI's
    train_file, eval_file = write_task(tmp_path, n_train=64, n_eval=20)
    eval_file = eval_file if with_eval else None
    ref = runner.train(load_recipe(_write(tmp_path, tiny_random, train_file, eval_file, "ref")), progress=False)
    cut_recipe = _write(tmp_path, tiny_random, train_file, eval_file, "cut")
    lamina_cli("train", str(cut_recipe), "--quiet", user="t", kill="train.checkpoint")
    cut = tmp_path / "cut"
    saved = yaml.safe_load((cut / "recipe.yaml").read_text())
    # The saved recipe says what the run did: no hash split of a run with a named eval file.
    assert saved["intake"]["eval_ratio"] == (0.0 if with_eval else 0.1)

    tampered = tmp_path / "tampered"
    shutil.copytree(cut, tampered)
    inputs = json.loads((tampered / "inputs.json").read_text())
    inputs["data"]["eval_sha256" if with_eval else "train_sha256"] = "0" * 64
    (tampered / "inputs.json").write_text(json.dumps(inputs))
    with pytest.raises(LaminaError, match="data differs from what the run started on"):
        runner.resume(tampered, progress=False)

    code, out, err = lamina_main("train", "--resume", str(cut), "--quiet", user="t")
    assert code == 0, err
    ref_data, cut_data = (json.loads((d / "run.json").read_text())["data"] for d in (ref, cut))
    assert cut_data == ref_data  # same version, same record hashes, same file names: same lineage
    assert ref_data["eval"] == (str(eval_file) if with_eval else None)
    with catalog.session() as s:
        assert [v.id for v in s.scalars(select(catalog.Version))] == [ref_data["dataset_version"]]
    assert [s for s, _ in _losses(cut)] == [s for s, _ in _losses(ref)] == list(range(1, 7))
    for (_, a), (_, b) in zip(_losses(ref), _losses(cut), strict=True):
        assert abs(a - b) < 1e-5


def test_resume_refuses_a_run_that_did_not_record_its_inputs(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=8)
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict(tiny_random, train_file)))
    (run / "run.json").write_text(json.dumps({"id": "old-run", "status": "running"}))
    with pytest.raises(LaminaError, match="did not record its inputs") as e:
        runner.resume(run, progress=False)
    assert str(run / "inputs.json") in str(e.value)
    assert not (tmp_path / "lamina-home" / "catalog" / "catalog.db").exists()  # nothing taken in


def test_a_refused_train_leaves_an_existing_dataset_version_alone(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=16)
    made = prepare_for_training(parse_recipe(recipe_dict(tiny_random, train_file)))  # dataset "t"
    d = recipe_dict(tiny_random, train_file)
    d.update(name="other", model={"base": str(tmp_path / "nope")})
    with pytest.raises(LaminaError, match="no such model directory"):
        runner.train(parse_recipe(d), progress=False)
    with catalog.session() as s:
        rows = [(v.id, v.name, v.status) for v in s.scalars(select(catalog.Version))]
    assert rows == [(made.version_id, "t", "current")]
