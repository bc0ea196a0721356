"""The data commands through `lamina.cli.main`: results on stdout, errors as one line, exit 2,
and a refused command leaves the catalog as it was."""

from __future__ import annotations

import json

import pytest
from intake_fixtures import tickets, write_jsonl

from lamina import fsio
from lamina.data import catalog
from lamina.governance import audit


@pytest.fixture
def lamina(cli_factory):
    return cli_factory(user="alice")


ADD = [
    "--licence",
    "cc-by-4.0",
    "--origin",
    "synthetic",
    "--purpose",
    "support bot",
    "--lawful-basis",
    "contract",
]


def test_add_intake_forget_cycle(lamina, tmp_path, workspace):
    path = write_jsonl(tmp_path / "t.jsonl", tickets(60))
    code, out, _ = lamina("data", "add", str(path), "--name", "tickets", *ADD, "--json")
    assert code == 0 and json.loads(out)["records"] == 60
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dataset: support}\nintake: {workers: 1, eval_ratio: 0.2}\n")
    code, out, _ = lamina("data", "intake", "tickets", "--name", "support", "--recipe", str(recipe), "--json")
    manifest = json.loads(out)
    assert code == 0 and manifest["counts"]["train"] + manifest["counts"]["eval"] == 60
    # No NER model here: names and places are asked for but nothing finds them — said loudly.
    assert manifest["steps"]["pii"]["uncovered"] == ["PERSON", "LOCATION"]
    card_text = next((workspace / "datasets").rglob("README.md")).read_text()
    assert "**Entities not covered:** LOCATION, PERSON" in card_text
    fsio.write_json(
        workspace / "runs" / "r1" / "run.json", {"id": "r1", "data": {"dataset_version": manifest["id"]}}
    )
    code, out, _ = lamina("data", "forget", "--subject-id", "subject-2", user="alice")
    assert code == 0
    assert "tickets: 6 records removed" in out and "RETRAIN REQUIRED: run r1" in out
    code, out, _ = lamina("data", "show", "support", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["parent"] == manifest["id"] and shown["status"] == "current"  # the successor
    assert shown["card"].endswith("/README.md") and open(shown["card"]).read().startswith("---\n")
    code, out, _ = lamina("data", "list", "--json")
    listing = json.loads(out)
    assert [v["status"] for v in listing["versions"]] == ["withdrawn", "current"]
    assert [r["run"] for r in listing["retrain_required"]] == ["r1"]
    actions = [json.loads(line)["action"] for line in audit.log_path().read_text().splitlines()]
    assert actions[-3:] == ["data.add", "data.intake", "data.forget"]


def test_bad_input_is_one_line_exit_2_catalog_unchanged(lamina, tmp_path):
    good = write_jsonl(tmp_path / "g.jsonl", tickets(5))
    assert lamina("data", "add", str(good), "--name", "g", *ADD)[0] == 0
    before = catalog.snapshot_table()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(tickets(1)[0]) + "\n{oops\n")
    code, out, err = lamina("data", "add", str(bad), "--name", "b", *ADD)
    assert code == 2 and out == ""
    # rich may wrap the line at the terminal width; the words are what matter
    assert " ".join(err.split()).startswith(f"error: {bad}:2: malformed JSON") and "Traceback" not in err
    code, _, err = lamina("data", "intake", "nope", "--name", "x")
    assert code == 2 and "no source named 'nope'" in err
    code, _, err = lamina("data", "add", str(good), "--name", "h", *ADD[:-1], "because")
    assert code == 2 and "--lawful-basis" in err
    assert catalog.snapshot_table() == before


def test_pii_report_json_and_recipe_settings(lamina, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x.jsonl}\nintake:\n  pii:\n    entities: [EMAIL_ADDRESS, CREDIT_CARD]\n")
    code, out, _ = lamina("data", "pii-report", "--recipe", str(recipe), "--n", "80", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["active"] == ["EMAIL_ADDRESS", "CREDIT_CARD"]
    assert rep["entities"]["CREDIT_CARD"]["recall"] == 1.0 and rep["entities"]["US_SSN"]["recall"] == 0.0
    code, out, _ = lamina("data", "pii-report", "--n", "40")
    assert code == 0 and out.splitlines()[1].split() == ["entity", "gold", "recall", "95%", "CI", "precision", "95%", "CI", "masked"]


def test_keys_rotate_through_the_cli(lamina, tmp_path):
    write_jsonl(tmp_path / "t.jsonl", tickets(5))
    assert lamina("data", "add", str(tmp_path / "t.jsonl"), "--name", "t", *ADD)[0] == 0
    code, out, _ = lamina("keys", "rotate", "--json")
    result = json.loads(out)
    assert code == 0 and len(result["rewrapped"]) == 2  # the raw snapshot and the pseudonym key
    code, out, _ = lamina("data", "intake", "t", "--name", "t")
    assert code == 0 and "dataset t version" in out


def test_intake_warns_when_names_cannot_be_masked(lamina, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", tickets(20))
    assert lamina("data", "add", str(path), "--name", "tickets", *ADD)[0] == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dataset: support}\nintake: {workers: 1, eval_ratio: 0.2}\n")
    code, out, _ = lamina("data", "intake", "tickets", "--name", "support", "--recipe", str(recipe))
    assert code == 0 and "WARNING: PERSON, LOCATION not masked: no NER model is installed" in out
    # Asking only for pattern entities covers everything asked: no warning.
    recipe.write_text("data: {dataset: support}\nintake: {workers: 1, eval_ratio: 0.2, pii: {entities: [EMAIL_ADDRESS]}}\n")
    code, out, _ = lamina("data", "intake", "tickets", "--name", "support2", "--recipe", str(recipe))
    assert code == 0 and "WARNING" not in out


def test_add_alpaca_parquet_and_a_second_name_for_the_same_version(lamina, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"Explain step {i}.", "input": "", "output": f"Step {i} turns the key.", "id": i}
            for i in range(20)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "alpaca.parquet")
    code, out, err = lamina("data", "add", str(tmp_path / "alpaca.parquet"), "--name", "howto", *ADD,
                            "--format", "alpaca", "--personal-data", "no", "--json")  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert added["records"] == 20 and added["read_as"]["kind"] == "parquet" and added["read_as"]["shape"] == "alpaca"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dataset: x}\nintake: {workers: 1}\n")
    first = json.loads(lamina("data", "intake", "howto", "--name", "support-v1", "--recipe", str(recipe), "--json")[1])
    assert lamina("data", "intake", "howto", "--name", "support-v2", "--recipe", str(recipe))[0] == 0
    for name in ("support-v1", "support-v2"):
        code, out, _ = lamina("data", "show", name, "--json")
        shown = json.loads(out)
        assert code == 0 and shown["id"] == first["id"] and shown["names"] == ["support-v1", "support-v2"]
