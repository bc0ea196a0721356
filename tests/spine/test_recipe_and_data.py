"""Bad input fails early with the file, line or key named — and writes nothing."""

from __future__ import annotations

import json

import pytest
import yaml

from lamina.data.formats import read_jsonl
from lamina.errors import LaminaError
from lamina.recipe import SYNTHETIC_PROVENANCE, load_recipe, parse_recipe


def test_unknown_and_mistyped_keys_are_named_with_their_path():
    with pytest.raises(LaminaError) as e:
        parse_recipe({"data": {"train": "x"}, "train": {"lr": "fast", "learning_rate": 1}})
    msg = str(e.value)
    assert "train.lr: Input should be a valid number" in msg
    assert "train.learning_rate: unknown key" in msg


def test_method_errors_name_the_key_without_union_tags():
    with pytest.raises(LaminaError, match=r"method\.r: Input should be greater than 0"):
        parse_recipe({"data": {"train": "x"}, "method": {"name": "lora", "r": 0}})


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ndata:\n  train: [a\n")
    with pytest.raises(LaminaError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(p)


def test_data_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text("{}")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"data": {"train": "d/train.jsonl"}}))
    assert load_recipe(tmp_path / "r.yaml").data.train == str((tmp_path / "d" / "train.jsonl").resolve())


def test_every_path_in_a_recipe_is_relative_to_the_recipe_file(tmp_path, monkeypatch):
    """Even when the same relative path also exists under the current directory."""
    (tmp_path / "cfg" / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "data.jsonl").write_text("{}")  # a decoy next to the working directory
    recipe = {
        "model": {"base": "models/base"}, "data": {"train": "data.jsonl", "eval": "held.jsonl"},
        "eval": {"eval_file": "e.jsonl", "canaries": "c.jsonl"}, "output": {"dir": "runs/x"},
        "intake": {"contamination_eval": ["bench.jsonl"]}, "ppo": {"reward_model": "rm"},
        "stages": [{"objective": "sft", "data": {"train": "s.jsonl", "licence": "mit", "provenance": SYNTHETIC_PROVENANCE}}],
    }  # fmt: skip
    (tmp_path / "cfg" / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    r = load_recipe("cfg/r.yaml")
    cfg = (tmp_path / "cfg").resolve()
    assert r.model.base == str(cfg / "models" / "base")
    assert (r.data.train, r.data.eval) == (str(cfg / "data.jsonl"), str(cfg / "held.jsonl"))
    assert (r.eval.eval_file, r.eval.canaries) == (str(cfg / "e.jsonl"), str(cfg / "c.jsonl"))
    assert (r.output.dir, r.ppo.reward_model) == (str(cfg / "runs" / "x"), str(cfg / "rm"))
    assert r.intake.contamination_eval == [str(cfg / "bench.jsonl")]
    assert r.stages[0].data.train == str(cfg / "s.jsonl")
    # a name with no directory beside the recipe is a hub id; `hub:` data stays as written
    (tmp_path / "cfg" / "r2.yaml").write_text(yaml.safe_dump({"model": {"base": "Qwen/Qwen2.5-0.5B"},
                                                              "data": {"train": "hub:org/faq:train"}}))
    r2 = load_recipe(tmp_path / "cfg" / "r2.yaml")
    assert (r2.model.base, r2.data.train) == ("Qwen/Qwen2.5-0.5B", "hub:org/faq:train")


@pytest.mark.parametrize(
    ("line", "fmt", "message"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}', "chat",
         "malformed JSON"),
        ('{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}', "chat", "has no `role`"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}', "chat",
         "empty assistant turn"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "chat", "role is 'robot'"),
        ('{"prompt": "a", "completion": ""}', "prompt_completion", "`completion` is empty"),
        ('{"prompt": "a", "chosen": "b"}', "preference", "`rejected` must be a string"),
        ('{"prompt": "a", "completion": "b", "system": 1}', "prompt_completion", "`system` must be a string"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, fmt, message):
    good = {"chat": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "prompt_completion": {"prompt": "q", "completion": "a"},
            "preference": {"prompt": "q", "chosen": "a", "rejected": "b"}}[fmt]
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps(good) + "\n\n" + line + "\n")
    with pytest.raises(LaminaError) as e:
        read_jsonl(p, fmt)
    assert f"{p}:3:" in str(e.value)
    assert message in str(e.value)


def test_non_utf8_and_missing_and_empty_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(LaminaError, match=r"bad\.jsonl:1: not valid UTF-8"):
        read_jsonl(bad, "prompt_completion")
    with pytest.raises(LaminaError, match="no such data file"):
        read_jsonl(tmp_path / "nope.jsonl", "chat")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LaminaError, match="has no records"):
        read_jsonl(empty, "chat")


def test_prompt_completion_becomes_chat(tmp_path):
    p = tmp_path / "pc.jsonl"
    p.write_text('{"prompt": "q", "completion": "a", "subject_id": 7}\n')
    (rec,) = read_jsonl(p, "prompt_completion")
    assert rec.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert rec.subject_id == "7"


def test_extra_keys_are_kept_as_metadata_not_refused(tmp_path):
    p = tmp_path / "pc.jsonl"
    p.write_text('{"prompt": "q", "completion": "a", "source": "wiki", "meta": {"k": 1}}\n')
    (rec,) = read_jsonl(p, "prompt_completion")
    assert rec.meta == {"source": "wiki", "k": 1}
