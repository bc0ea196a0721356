"""Turning `security.encrypt_at_rest` on encrypts the dataset versions made before it, under
the same names; training reads them back record for record; `data forget` still reaches them."""

from __future__ import annotations

from lamina.data.intake import prepare_for_training
from lamina.data.intake.pipeline import run_intake
from lamina.recipe import parse_recipe


def _recipe(dataset: str):
    return parse_recipe({"name": "r", "data": {"dataset": dataset}, "intake": {"workers": 1}})


def test_turning_it_on_encrypts_existing_versions_under_their_names(source, cli_factory, workspace, monkeypatch):
    from lamina.governance import access
    from lamina.registry.withdrawal import forget_subject

    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    v1 = run_intake("tk", [(source, "auto")], _recipe("x").intake)
    before = prepare_for_training(_recipe("tk"))
    directory = workspace / "datasets" / v1.version_id
    answer = before.train[0]["messages"][-1]["content"].encode()
    assert answer in (directory / "train.jsonl").read_bytes()

    code, out, err = cli_factory(user="admin")("policy", "encrypt-at-rest", "on")
    assert code == 0, err
    assert out.splitlines() == ["security.encrypt_at_rest: off -> on",
                                "1 dataset versions encrypted; registered versions stay as signed"]
    names = sorted(p.name for p in directory.iterdir())
    assert "train.jsonl" not in names and {"train.jsonl.enc", "eval.jsonl.enc"} <= set(names)
    assert answer not in (directory / "train.jsonl.enc").read_bytes()
    after = prepare_for_training(_recipe("tk"))  # the re-hash holds: the id is the plaintext's
    assert (after.version_id, after.train, after.eval) == (v1.version_id, before.train, before.eval)

    report = forget_subject("subject-1")
    assert report.versions[0]["old"] == v1.version_id
    assert not [p for p in directory.iterdir() if p.name.startswith(("train.", "eval."))]
    successor = workspace / "datasets" / report.versions[0]["new"]
    assert (successor / "train.jsonl.enc").is_file() and not (successor / "train.jsonl").exists()
    assert cli_factory(user="admin")("policy", "encrypt-at-rest", "on")[1].strip() == (
        "security.encrypt_at_rest: on -> on"  # nothing left to encrypt: no second line
    )
