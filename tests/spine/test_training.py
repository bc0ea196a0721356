"""The loop: exact accumulation, gradients equal to an unpacked reference, resumable runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import recipe_dict, write_task

from lamina.data.chat import tokenize_chat
from lamina.data.dataset import load_training_data
from lamina.data.formats import read_jsonl
from lamina.data.packing import micro_batches
from lamina.methods.trained import load_model
from lamina.models.loading import load_hf_model
from lamina.recipe import parse_recipe
from lamina.train import runner
from lamina.train.objectives.sft import SFT
from lamina.train.setup import setup as set_up_run


def _one_step_params(tiny_random, train_file, micro_tokens):
    recipe = parse_recipe(recipe_dict(tiny_random, train_file, steps=1, tokens_per_step=2048,
                                      micro_tokens=micro_tokens, grad_clip=None, precision="fp32"))
    # fp32: under bf16 autocast (the CPU default where bf16 is native) rounding depends on the split
    s = set_up_run(recipe)
    s.loop.run()
    return {n: p.detach().clone() for n, p in s.model.named_parameters() if p.requires_grad}, s


def test_eight_micro_batches_give_the_same_update_as_one(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=64)
    one, s1 = _one_step_params(tiny_random, train_file, 2048)
    many, s8 = _one_step_params(tiny_random, train_file, 256)
    chosen = s8.loop.sampler._permutation(0)[: s8.loop.sampler.cursor]
    assert len(micro_batches([s8.loop.examples[i] for i in chosen], 128, 256)) >= 8
    for name in one:
        assert torch.allclose(one[name], many[name], atol=1e-6), name
    changed = [n for n in one if "lora_B" in n and one[n].abs().sum() > 0]
    assert changed  # the step did update the adapter


def test_packed_gradients_match_an_unpacked_fp32_reference(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=6)
    model, tok = load_model(tiny_random)
    examples = [tokenize_chat(tok, r.messages) for r in read_jsonl(train_file, "chat")]
    (batch,) = micro_batches(examples, row_len=256, micro_tokens=10_000)
    loss_sum, _ = SFT.loss(model, batch, "masked")
    (loss_sum / batch.n_loss).backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        logits = model(input_ids=ids).logits[0, :-1]
        mask = torch.tensor(ex.labels[1:])
        total = total + F.cross_entropy(logits[mask], ids[0, 1:][mask], reduction="sum")
    (total / batch.n_loss).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(packed[n], p.grad, atol=1e-6, rtol=1e-4), n


def test_loss_falls_and_run_directory_has_everything(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=64)
    recipe = parse_recipe(recipe_dict(tiny_random, train_file, steps=12, lr=5e-3))
    run_dir = runner.train(recipe, progress=False)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.2
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["steps"] == 12
    assert set(info["base"]["files"]) >= {"model.safetensors", "config.json"}
    assert "tokenizer.json" in info["base"]["tokenizer_files"] and info["base"]["chat_template_sha256"]
    assert info["data"]["train_sha256"] and info["code"]["git_commit"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "loss.png").stat().st_size > 1000
    from peft import PeftModel

    base = load_hf_model(tiny_random)
    PeftModel.from_pretrained(base, str(run_dir / "adapter"))  # the PEFT format loads as such


def test_full_finetuning_saves_a_loadable_checkpoint(tiny_random, tmp_path):
    from transformers import AutoModelForCausalLM

    train_file, _ = write_task(tmp_path, n_train=16)
    d = recipe_dict(tiny_random, train_file, steps=2)
    d["method"] = {"name": "full"}
    run_dir = runner.train(parse_recipe(d), progress=False)
    saved = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    before = AutoModelForCausalLM.from_pretrained(tiny_random)
    w = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(saved.state_dict()[w], before.state_dict()[w])


def test_merged_lora_matches_unmerged(tiny_random, tmp_path):
    from lamina.train.merge import merge_run

    train_file, _ = write_task(tmp_path, n_train=32)
    run_dir = runner.train(parse_recipe(recipe_dict(tiny_random, train_file, steps=3, lr=1e-2)), progress=False)
    merged_dir = merge_run(run_dir, tmp_path / "merged")
    unmerged, _ = load_model(run_dir)
    merged, _ = load_model(merged_dir)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        a, b = unmerged(input_ids=ids).logits, merged(input_ids=ids).logits
        base = load_hf_model(tiny_random)(input_ids=ids).logits
    assert not torch.allclose(a, base, atol=1e-4)  # the adapter changed something
    assert torch.allclose(a, b, atol=1e-4)


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "lamina.cli.__main__", *args], env=env, capture_output=True,
                          text=True, **kw)


# Three cold CLI processes (271 s under load 11 on 2 cores). The same seam, checkpoint restore and
# metrics trimming, is covered fast by test_resume.py::test_resume_from_a_mid_run_checkpoint_redoes_the_later_steps_exactly.
@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_trajectory(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=64)
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home")}
    def write(name, out):
        d = recipe_dict(tiny_random, train_file, steps=10, checkpoint_every=3, lr=5e-3)
        d["method"]["dropout"] = 0.1  # RNG state matters too
        d["output"] = {"dir": str(out)}
        (tmp_path / name).write_text(yaml.safe_dump(d))
        return tmp_path / name
    ref_recipe, cut_recipe = write("ref.yaml", tmp_path / "ref"), write("cut.yaml", tmp_path / "cut")
    assert _cli(["train", str(ref_recipe), "--quiet"], env).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "lamina.cli.__main__", "train", str(cut_recipe), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "checkpoints" / "step-000006" / "state.json").exists():
        assert time.time() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "running"
    resumed = _cli(["train", "--resume", str(tmp_path / "cut"), "--quiet"], env)
    assert resumed.returncode == 0, resumed.stderr
    def losses(d):
        return [(m["step"], m["loss"]) for m in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    ref, cut = losses(tmp_path / "ref"), losses(tmp_path / "cut")
    assert [s for s, _ in ref] == [s for s, _ in cut] == list(range(1, 11))
    for (_, a), (_, b) in zip(ref, cut, strict=True):
        assert abs(a - b) < 1e-5


# Four cold CLI processes (116 s under load 11). The same cases through `lamina.cli.main` in
# process: test_resume.py::test_bad_inputs_exit_2_name_the_problem_and_leave_no_run; a real process
# exiting 2 without a traceback: tests/train/test_stages.py::test_cli_prints_a_bad_stage_without_traceback_and_exits_2.
@pytest.mark.slow
def test_bad_inputs_exit_nonzero_name_the_problem_and_leave_no_run(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=8)
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home")}
    cases = {
        "typo.yaml": ({**recipe_dict(tiny_random, train_file), "trian": {}}, "trian: unknown key"),
        "nobase.yaml": ({**recipe_dict(tiny_random, train_file), "model": {"base": str(tmp_path / "nope")}},
                        "model.base: no such model directory"),
        "wrongtype.yaml": ({**recipe_dict(tiny_random, train_file), "seed": "abc"}, "seed: Input should be"),
    }
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text(train_file.read_text().splitlines()[0] + "\n{not json\n")
    cases["baddata.yaml"] = (recipe_dict(tiny_random, bad_data), f"{bad_data}:2: malformed JSON")
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(yaml.safe_dump(data))
        r = _cli(["train", str(tmp_path / name)], env)
        assert r.returncode == 2, (name, r.stderr)
        assert message in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr
        runs = tmp_path / "home" / "runs"
        assert not runs.exists() or not any(runs.iterdir()), name


def test_overlong_examples_are_dropped_or_truncated_and_counted(tiny_random, tmp_path):
    train_file, _ = write_task(tmp_path, n_train=20)
    _, tok = load_model(tiny_random)
    lengths = sorted(len(tokenize_chat(tok, r.messages).input_ids) for r in read_jsonl(train_file, "chat"))
    cut = lengths[len(lengths) // 2]
    for overlong, key in (("drop", "dropped"), ("truncate", "truncated")):
        d = recipe_dict(tiny_random, train_file, steps=1)
        d["data"]["max_length"] = cut
        d["data"]["overlong"] = overlong
        s = set_up_run(parse_recipe(d))
        assert s.data_stats[key] > 0
        assert all(len(e.input_ids) <= cut for e in s.loop.examples)
        after_intake = len(load_training_data(parse_recipe(d)).train)  # intake may drop near-duplicates
        assert s.data_stats["examples"] == (after_intake - s.data_stats["dropped"])


def test_pickle_only_weights_are_refused_unless_allowed(tiny_random, tmp_path):
    from safetensors.torch import load_file

    from lamina.errors import LaminaError

    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_random.iterdir():
        if f.suffix != ".safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(tiny_random / "model.safetensors"), d / "pytorch_model.bin")
    with pytest.raises(LaminaError, match="only pickle weights"):
        load_hf_model(d)
    model = load_hf_model(d, allow_pickle=True)
    assert sum(p.numel() for p in model.parameters()) > 0
