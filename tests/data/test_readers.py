"""Data in the forms people have it: JSON arrays, Parquet, CSV/TSV, `datasets` directories and
`hub:` datasets read into the same records as JSONL; ShareGPT, Alpaca and column mappings;
extra columns kept as metadata; a `system` column honoured."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lamina.data.readers import reference
from lamina.data.shapes import read_records
from lamina.errors import LaminaError

ROWS = [
    {
        "question": f"How do I reset device {i}?",
        "answer": f"Hold button {i} for ten seconds.",
        "topic": f"t{i % 3}",
    }
    for i in range(12)
]
COLUMNS = {"prompt": "question", "completion": "answer"}


def _expected():
    return [
        [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
        for r in ROWS
    ]


def _write(tmp_path, kind):
    if kind == "jsonl":
        p = tmp_path / "faq.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":
        p = tmp_path / "faq.json"
        p.write_text(json.dumps(ROWS, indent=2))
    elif kind == "parquet":
        p = tmp_path / "faq.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), p)
    elif kind in ("csv", "tsv"):
        p = tmp_path / f"faq.{kind}"
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(ROWS[0]), delimiter="," if kind == "csv" else "\t")
            w.writeheader()
            w.writerows(ROWS)
    elif kind == "datasets_dir":
        import datasets

        p = tmp_path / "faq_ds"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(p))
    else:  # a dataset repository laid out as on the Hub, loaded through `datasets`
        p = tmp_path / "faq_repo"
        (p / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(ROWS), p / "data" / "train-00000-of-00001.parquet")
        p = f"hub:{p}"
    return str(p)


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "csv", "tsv", "datasets_dir", "hub"])
def test_every_form_gives_the_same_records_with_extra_columns_as_metadata(tmp_path, kind):
    ref = reference(_write(tmp_path, kind))
    assert ref.kind == kind
    records = read_records(ref, "prompt_completion", COLUMNS)
    assert [r.messages for r in records] == _expected()
    assert [r.meta for r in records] == [{"topic": r["topic"]} for r in ROWS]
    if kind == "hub":
        # the builder's hash stands for the commit a hub revision resolved to
        assert len(ref.read_as()["resolved_revision"]) >= 16


def test_sharegpt_alpaca_and_a_system_column():
    from lamina.data.shapes import to_record

    share = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi?"},
            {"from": "gpt", "value": "Hello."},
        ],
        "lang": "en",
    }
    rec = to_record(share, "sharegpt", None, "x:1")
    assert rec.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    assert rec.meta == {"lang": "en"}
    alpaca = {"instruction": "Translate.", "input": "chat", "output": "cat", "system": "You translate."}
    assert to_record(alpaca, "alpaca", None, "x:2").messages == [
        {"role": "system", "content": "You translate."}, {"role": "user", "content": "Translate.\n\nchat"},
        {"role": "assistant", "content": "cat"}]  # fmt: skip
    no_input = to_record({"instruction": "Say hi.", "input": "", "output": "hi"}, "alpaca", None, "x:3")
    assert no_input.messages[0] == {"role": "user", "content": "Say hi."}
    chat = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "system": "S",
    }
    assert to_record(chat, "chat", None, "x:4").messages[0] == {"role": "system", "content": "S"}
    with pytest.raises(LaminaError, match=r"^x:5: conversations\[1\]\.from is 'robot'"):
        to_record(
            {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
            "sharegpt",
            None,
            "x:5",
        )


def test_bad_rows_and_mappings_name_the_place(tmp_path):
    p = tmp_path / "faq.csv"
    p.write_text("question,answer\nq1,a1\nq2,\n")
    with pytest.raises(LaminaError, match=r"faq\.csv:3: `completion` is empty"):
        read_records(p, "prompt_completion", COLUMNS)
    with pytest.raises(
        LaminaError, match=r"faq\.csv:2: no column 'reply' \(named by data\.columns\.completion\)"
    ):
        read_records(p, "prompt_completion", {"prompt": "question", "completion": "reply"})
    with pytest.raises(LaminaError, match="'answer' is not a field of format 'chat'"):
        read_records(p, "chat", {"answer": "answer"})
    with pytest.raises(LaminaError, match="no such data file"):
        reference(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LaminaError, match=r"bad\.parquet: not a readable Parquet file"):
        read_records(tmp_path / "bad.parquet", "chat")


def test_add_source_from_parquet_records_how_it_was_read(tmp_path):
    from lamina.data.intake.sources import SourceInfo, add_source, iter_source_records

    path = _write(tmp_path, "parquet")
    info = SourceInfo("faq", "mit", "our wiki", "support bot", "legitimate_interest", format="prompt_completion",
                      personal_data=False, columns=COLUMNS)  # fmt: skip
    src = add_source(path, info)
    assert (src.records, src.format) == (12, "chat")
    read_as = src.provenance()["read_as"]
    assert read_as["kind"] == "parquet" and read_as["shape"] == "prompt_completion"
    assert read_as["columns"] == COLUMNS and len(read_as["file_sha256"]) == 64
    assert [r.messages for r in iter_source_records(src)] == _expected()


def test_recipe_trains_from_csv_with_a_column_mapping(tmp_path):
    from lamina.data.intake import prepare_for_training
    from lamina.recipe import load_recipe

    _write(tmp_path, "csv")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: faq\ndata:\n  train: faq.csv\n  licence: mit\n  format: prompt_completion\n"
        "  provenance: {origin: an FAQ export, purpose: tests, lawful_basis: contract, personal_data: false}\n"
        "  columns: {prompt: question, completion: answer}\nintake: {workers: 1, eval_ratio: 0.0, dedup_threshold: 1.0}\n"
    )
    prepared = prepare_for_training(load_recipe(recipe))
    assert sorted(r["messages"][0]["content"] for r in prepared.train) == sorted(r["question"] for r in ROWS)


def test_a_version_taken_in_again_under_a_new_name_keeps_the_old_name(tmp_path):
    from lamina.data import catalog
    from lamina.data.intake.pipeline import run_intake
    from lamina.data.intake.sources import SourceInfo, add_source
    from lamina.recipe import IntakeSpec

    info = SourceInfo("faq", "mit", "wiki", "bot", "legitimate_interest", format="prompt_completion",
                      personal_data=False, columns=COLUMNS)  # fmt: skip
    src = add_source(_write(tmp_path, "json"), info)
    spec = IntakeSpec(workers=1)
    v1 = run_intake("support-v1", [(src, "auto")], spec)
    v2 = run_intake("support-v2", [(src, "auto")], spec)
    assert v1.version_id == v2.version_id
    with catalog.session() as s:
        assert catalog.resolve_version(s, "support-v1").id == v1.version_id
        assert catalog.resolve_version(s, "support-v2").id == v1.version_id
        assert catalog.names_of(s, v1.version_id) == ["support-v1", "support-v2"]
