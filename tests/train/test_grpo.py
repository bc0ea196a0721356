"""GRPO and RLOO: advantages, baselines and the clipped/KL loss against numbers worked out by
hand; the packed objective against each reply alone; reply cutting; reward sources and bad
settings; stage lineage; a slow run where a verifiable reward rises on the tiny base."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamina.data.chat import Tokenized
from lamina.errors import LaminaError
from lamina.models.loading import load_hf_model, load_tokenizer
from lamina.recipe import SYNTHETIC_PROVENANCE, GrpoSpec, LoraSpec, parse_recipe
from lamina.train.objectives import grpo


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350; group 2 all equal
    got = grpo.group_advantages(rewards, 4, "group", eps=0.0 + 1e-12).tolist()
    a = 0.5 / math.sqrt(1 / 3)
    assert got == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-6)
    assert grpo.group_advantages(rewards, 4, "none").tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    # batch std: mean 1.25, squared deviations 0.0625 + 1.5625 * 2 + 0.0625 + 0.5625 * 4 = 5.5, / 7
    s = math.sqrt(5.5 / 7)
    got = grpo.group_advantages(rewards, 4, "batch", eps=1e-12).tolist()
    assert got == pytest.approx([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0], abs=1e-6)


def test_leave_one_out_baseline_by_hand():
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0, 0.0, 4.0])
    # group 1: baselines (1+2)/2, (3+2)/2, (3+1)/2; group 2: (0+4)/2, (0+4)/2, 0
    got = grpo.leave_one_out_advantages(rewards, 3, "none").tolist()
    assert got == pytest.approx([1.5, -1.5, 0.0, -2.0, -2.0, 4.0])


def test_k3_and_asymmetric_clip_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    # d = ref - logp = -0.5: e^-0.5 + 0.5 - 1 = 0.106531; d = 0: 0
    assert grpo.k3(logp, ref).tolist() == pytest.approx([0.106531, 0.0], abs=1e-6)
    old = torch.zeros(4)
    new = torch.tensor([0.5, 0.5, -0.5, 0.1])  # ratios 1.6487, 1.6487, 0.6065, 1.1052
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0])
    loss, clipped = grpo.clipped_surrogate(new, old, adv, clip=0.2, clip_high=0.3)
    r = [math.exp(0.5), math.exp(0.5), math.exp(-0.5), math.exp(0.1)]
    want = [-min(r[0], 1.3), -min(-r[1], -1.3), -min(2 * r[2], 2 * 0.8), -r[3]]
    assert loss.tolist() == pytest.approx(want, rel=1e-6)
    assert want[0] == pytest.approx(-1.3) and want[1] == pytest.approx(r[1]) and want[2] == pytest.approx(-2 * r[2])
    assert clipped.tolist() == [1.0, 0.0, 0.0, 0.0]


def _policy(tiny_random):
    from lamina import methods

    torch.manual_seed(5)
    model = methods.get("lora").apply(load_hf_model(tiny_random), LoraSpec(r=4, alpha=8))
    with torch.no_grad():  # away from zero, so policy and reference differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _reply_logp(model, tok) -> torch.Tensor:
    ids = torch.tensor([tok.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return torch.stack([logp[j - 1, tok.input_ids[j]] for j in range(1, len(tok.input_ids)) if tok.labels[j]])


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_packed_objective_matches_each_reply_alone(tiny_random, norm):
    g = torch.Generator().manual_seed(0)
    lengths = [(5, 3), (7, 6), (4, 2), (6, 5)]  # (prompt, reply) tokens
    toks = [Tokenized(torch.randint(5, 60, (p + r,), generator=g).tolist(), [False] * p + [True] * r)
            for p, r in lengths]
    advs = [1.5, -0.5, 0.0, -1.0]
    model = _policy(tiny_random)
    with torch.no_grad():
        olds = [_reply_logp(model, t) + 0.3 * torch.randn(len(_reply_logp(model, t)), generator=g) for t in toks]
        with model.disable_adapter():
            refs = [_reply_logp(model, t) for t in toks]
    samples = [grpo.Sample(t, a, 1.0 if norm == "token" else 1.0 / sum(t.labels), o, r)
               for t, a, o, r in zip(toks, advs, olds, refs, strict=True)]
    objective = grpo.GroupPolicyObjective("grpo", clip=0.2, clip_high=0.28, kl_coef=0.1, token_level=norm == "token")
    batches = objective.batches(samples, 16, 20)
    assert len(batches) >= 2
    count = sum(objective.count(b) for b in batches)
    assert count == (16 if norm == "token" else 4)
    total = torch.zeros(())
    for b in batches:
        loss_sum, metrics = objective.loss(model, b, "masked")
        (loss_sum / count).backward()
        total += loss_sum.detach()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    per_reply = []
    for t, a, o, r in zip(toks, advs, olds, refs, strict=True):
        lp = _reply_logp(model, t)
        ratio = torch.exp(lp - o)
        surrogate = -torch.minimum(ratio * a, torch.clamp(ratio, 0.8, 1.28) * a)
        kl = torch.exp(r - lp) - (r - lp) - 1
        tokens = surrogate + 0.1 * kl
        per_reply.append(tokens.sum() if norm == "token" else tokens.mean())
    want = torch.stack(per_reply).sum() / count
    want.backward()
    assert float(total / count) == pytest.approx(want.item(), rel=1e-5)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-6)


def test_replies_are_cut_after_the_end_token_or_stop_string(tiny_random):
    from lamina.models.generate import _cut_reply

    tok = load_tokenizer(tiny_random)
    words = tok.encode("TEAM: warehouse; ISSUE: broken", add_special_tokens=False)
    eos = tok.eos_token_id
    assert _cut_reply(words + [eos, 7, 8], tok, ()) == (words + [eos], True)
    assert _cut_reply(words, tok, ()) == (words, False)  # ran out of tokens: truncated
    reply, ended = _cut_reply(words + [eos], tok, [";"])
    assert ended and tok.decode(reply).strip() == "TEAM: warehouse;"
    reply, ended = _cut_reply(words, tok, ["ISSUE"])
    assert ended and tok.decode(reply).strip().endswith("ISSUE") and "broken" not in tok.decode(reply)


def test_sampled_replies_keep_the_prompt_unpadded(tiny_random):
    from lamina.models.generate import sample_replies

    model, tok = load_hf_model(tiny_random), load_tokenizer(tiny_random)
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "my red lamp is late again"}]]
    torch.manual_seed(0)
    got = sample_replies(model, tok, prompts, max_new_tokens=6)
    for p, ids, reply, trunc in zip(prompts, got.prompt_ids, got.reply_ids, got.truncated, strict=True):
        text = tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        assert ids == tok(text, add_special_tokens=False)["input_ids"]
        assert 1 <= len(reply) <= 6 and (tok.eos_token_id in reply) != trunc
    # with a stop string, generation stops after the token that completes it
    torch.manual_seed(1)
    got = sample_replies(model, tok, prompts * 4, max_new_tokens=12, stop=["e"])
    stopped = 0
    for reply, trunc in zip(got.reply_ids, got.truncated, strict=True):
        text = tok.decode(reply, skip_special_tokens=True)
        if "e" in text:
            stopped += 1
            assert not trunc and "e" not in tok.decode(reply[:-1], skip_special_tokens=True)
    assert stopped >= 4  # a random model writes an "e" soon enough


def exact_with_refs(prompts, responses, references):
    return [float(r == ref) for r, ref in zip(responses, references, strict=True)]


def two_scores(prompts, responses):
    return [0.0, 1.0]


def test_reward_sources_and_bad_settings():
    from lamina.train.grpo import rewarder

    with pytest.raises(LaminaError, match="exactly one"):
        rewarder(GrpoSpec())
    with pytest.raises(LaminaError, match="exactly one"):
        rewarder(GrpoSpec(reward="test_grpo:two_scores", reward_model="/x"))
    with pytest.raises(LaminaError, match="grpo.reward"):
        rewarder(GrpoSpec(reward="lamina.nowhere:fn"))
    r = rewarder(GrpoSpec(reward="test_grpo:exact_with_refs"))
    assert r.wants_references and r([None, None], ["a", "b"], ["a", "c"]).tolist() == [1.0, 0.0]
    r = rewarder(GrpoSpec(reward="test_grpo:two_scores"))
    with pytest.raises(LaminaError, match="2 scores for 3 replies"):
        r([None] * 3, ["a", "b", "c"], [None] * 3)
    with pytest.raises(LaminaError, match="grpo.group_size"):
        parse_recipe({"data": {"train": "x.jsonl"}, "grpo": {"group_size": 1}})
    with pytest.raises(LaminaError, match="grpo.loss_norm"):
        parse_recipe({"data": {"train": "x.jsonl"}, "grpo": {"loss_norm": "batch"}})
    with pytest.raises(LaminaError, match=r"stages.0: Value error, grpo.clip"):
        parse_recipe({"data": {"train": "x.jsonl"}, "stages": [{"objective": "grpo", "grpo": {"clip": -1}}]})


def _chat_file(tmp_path, n=16):
    from lamina.data.synthetic import task_splits

    train, held = task_splits(n_train=n, n_eval=4)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    return tmp_path / "t.jsonl"


TINY_RL = {"iterations": 2, "prompts": 2, "group_size": 2, "max_completion_length": 6, "eval_prompts": 2}


def test_prompt_tuning_is_refused_before_anything_is_written(tiny_random, tmp_path, workspace):
    from lamina.train import runner

    recipe = parse_recipe({
        "model": {"base": str(tiny_random)}, "data": {"train": str(_chat_file(tmp_path)), "licence": "internal", "provenance": SYNTHETIC_PROVENANCE},
        "method": {"name": "prompt"}, "train": {"objective": "grpo"},
        "grpo": {"reward": "lamina.train.verifiers:ticket_reward", **TINY_RL},
    })
    with pytest.raises(LaminaError, match="prompt and prefix"):
        runner.train(recipe, progress=False)
    assert not (workspace / "runs").exists()


def test_reward_stage_then_rloo_stage_records_lineage(tiny_random, tmp_path):
    from lamina.data.preference_synth import preference_splits
    from lamina.train import stages

    pairs, _ = preference_splits(n_train=16, n_eval=2)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    chat = _chat_file(tmp_path)
    recipe = parse_recipe({
        "name": "rl", "model": {"base": str(tiny_random)},
        "data": {"train": str(chat), "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 1, "tokens_per_step": 1024, "lr": 1e-3, "log_every": 1},
        "grpo": TINY_RL,
        "stages": [
            {"objective": "sft"},
            {"objective": "reward", "data": {"train": str(tmp_path / "p.jsonl"), "format": "preference",
                                             "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128}},
            {"objective": "rloo", "grpo": {"kl_coef": 0.0, "loss_norm": "sequence", "epochs": 2, "mini_batch": 2}},
        ],
    })
    sft_run, rm_run, rl_run = stages.run_stages(recipe, progress=False)
    info = json.loads((rl_run / "run.json").read_text())
    assert info["objective"] == "rloo" and info["status"] == "completed"
    assert info["parent_run"] == str(sft_run) and info["reward_run"] == str(rm_run)
    assert info["stage"] == {"index": 2, "of": 3, "objective": "rloo"}
    assert info["reward"] == {"reward_model": str(rm_run.resolve())}
    assert info["base"]["path"] == str(sft_run / "merged")
    assert "loss_norm: sequence" in (rl_run / "recipe.yaml").read_text()
    metrics = [json.loads(x) for x in (rl_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2] and all(m["kl"] == 0.0 for m in metrics)
    # 2 prompts x 2 replies in mini-batches of 2, twice: 4 optimiser steps per rollout batch
    assert all(m["steps"] == 4 and 0.0 <= m["clip_fraction"] <= 1.0 for m in metrics)
    assert info["steps"] == 8
    assert set(info["eval"]["before"]) >= {"reward", "greedy_reward", "kl"}
    assert (rl_run / "adapter" / "adapter_model.safetensors").is_file()


def test_a_grpo_stage_without_a_reward_fails_before_the_first_stage_runs(tiny_random, tmp_path, workspace):
    from lamina.train import stages

    recipe = parse_recipe({
        "name": "rl", "model": {"base": str(tiny_random)},
        "data": {"train": str(_chat_file(tmp_path)), "licence": "internal", "provenance": SYNTHETIC_PROVENANCE},
        "stages": [{"objective": "sft"}, {"objective": "grpo"}],
    })
    with pytest.raises(LaminaError, match=r"grpo stage needs `grpo.reward`"):
        stages.run_stages(recipe, progress=False)
    recipe.stages[1].grpo = {"reward": "lamina.train.verifiers:no_such_verifier"}
    with pytest.raises(LaminaError, match="grpo.reward"):
        stages.run_stages(recipe, progress=False)
    assert not (workspace / "runs").exists()


@pytest.mark.slow
def test_grpo_raises_the_ticket_reward_on_the_tiny_base(tmp_path):
    """The demo's setting (`lamina demo --rl`): GRPO from the pretrained tiny base with the ticket
    verifier. Measured on 2 loaded cores: sampled reward 0.35 -> 0.84, greedy 0.45 -> 0.97."""
    from lamina.data.synthetic import task_splits
    from lamina.train.grpo import train_grpo
    from lamina.train.tiny_base import ensure_tiny_base

    base = ensure_tiny_base(progress=False)
    train, held = task_splits(n_train=400, n_eval=32, seed=7)
    for name, records in (("t.jsonl", train), ("e.jsonl", held)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = parse_recipe({
        "name": "grpo-slow", "model": {"base": str(base)},
        "data": {"train": str(tmp_path / "t.jsonl"), "eval": str(tmp_path / "e.jsonl"), "licence": "internal", "provenance": SYNTHETIC_PROVENANCE,
                 "max_length": 256},
        "method": {"name": "lora", "r": 16, "alpha": 32},
        "train": {"objective": "grpo", "lr": 3e-3, "schedule": "constant"},
        "grpo": {"reward": "lamina.train.verifiers:ticket_reward", "iterations": 24, "prompts": 8,
                 "group_size": 8, "max_completion_length": 24, "eval_prompts": 32},
    })
    run_dir = train_grpo(recipe, progress=False)
    ev = json.loads((run_dir / "run.json").read_text())["eval"]
    assert ev["after"]["reward"] >= ev["before"]["reward"] + 0.2, ev
    assert ev["after"]["greedy_reward"] >= ev["before"]["greedy_reward"] + 0.2, ev
    assert ev["after"]["kl"] < 30, ev
