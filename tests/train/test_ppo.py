"""PPO: GAE, the clipped losses, KL-penalised rewards and the adaptive controller against
numbers worked out by hand; rollout masking; a slow end-to-end run where the reward rises."""

from __future__ import annotations

import json

import pytest
import torch

from lamina.errors import LaminaError
from lamina.recipe import SYNTHETIC_PROVENANCE
from lamina.train.objectives import ppo


def test_gae_matches_hand_computation():
    # One reply of 3 tokens then one padding position; gamma 0.9, lambda 0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0]])  # the value under padding must not leak in
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 1.0 + 0.9 * 0 - 0.3  # 0.7
    d1 = 0.0 + 0.9 * 0.3 - 0.4  # -0.13
    d0 = 0.0 + 0.9 * 0.4 - 0.5  # -0.14
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0], abs=1e-6)


def test_clipped_policy_loss_matches_hand_computation():
    old = torch.zeros(1, 3)
    # ratios e^0.5 = 1.6487 (clipped at 1.2 for a positive advantage), e^-0.5 = 0.6065, e^0 = 1
    new = torch.tensor([[0.5, -0.5, 0.0]])
    adv = torch.tensor([[1.0, -2.0, 3.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac = ppo.policy_loss(new, old, adv, mask, clip=0.2)
    r0, r1 = torch.exp(torch.tensor(0.5)).item(), torch.exp(torch.tensor(-0.5)).item()
    # token 0: max(-1*1.6487, -1*1.2) = -1.2 (clipped); token 1: max(2*0.6065, 2*0.8) = 1.6
    # (clipped); token 2: -3
    want = (max(-r0, -1.2) + max(2 * r1, 2 * 0.8) + -3.0) / 3
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 3)
    # masked tokens do not count
    loss_m, _ = ppo.policy_loss(new, old, adv, torch.tensor([[1.0, 0.0, 1.0]]), clip=0.2)
    assert loss_m.item() == pytest.approx((-1.2 - 3.0) / 2, rel=1e-6)


def test_clipped_value_loss_matches_hand_computation():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[1.5, 0.9]])
    ret = torch.tensor([[2.0, 0.0]])
    loss, clipfrac = ppo.value_loss(new, old, ret, torch.ones(1, 2), clip=0.2)
    # token 0: clipped value 1.2 -> max(0.25, 0.64) = 0.64; token 1: 0.9 inside -> max(0.81, 0.81)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2, rel=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)


def test_kl_penalised_rewards_put_the_score_on_the_last_real_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -0.1], [-1.0, -3.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = ppo.kl_penalised_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -0.4], [0.0, 2.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 0.04 + 2.0], [0.0, -0.2 - 1.0, 0.0]]))


def test_adaptive_kl_controller_follows_ziegler():
    ctl = ppo.KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(9.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error 0.5 clipped to 0.2
    assert ctl.update(5.4, 10) == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))  # error -0.1
    fixed = ppo.KLController(0.1)
    assert fixed.update(100.0, 10) == 0.1


def test_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo.whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.224744, 0.0, 1.224744], abs=1e-5) and w[0, 3] == 0
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert ppo.explained_variance(ret, ret, torch.ones(1, 3)) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full((1, 3), 2.0), ret, torch.ones(1, 3)) == pytest.approx(0.0)


def test_rollout_masks_everything_after_the_end_token(tiny_random):
    from lamina.models.loading import load_hf_model, load_tokenizer
    from lamina.recipe import PpoSpec
    from lamina.train.rlhf import rollout

    model, tok = load_hf_model(tiny_random), load_tokenizer(tiny_random)
    torch.manual_seed(0)
    prompts = [[{"role": "user", "content": f"ticket {i}"}] for i in range(6)]
    r = rollout(model, tok, prompts, PpoSpec(sampling={"max_new_tokens": 12, "temperature": 1.0}))
    resp = r.ids[:, r.prompt_len :]
    for row in range(6):
        ends = (resp[row] == tok.eos_token_id).nonzero().flatten().tolist()
        n = int(r.mask[row].sum())
        if ends:
            assert n == ends[0] + 1  # the end token itself is part of the reply
        else:
            assert n == resp.shape[1]
        assert torch.all(resp[row, n:] == tok.pad_token_id)
    assert r.attention[:, r.prompt_len :].float().equal(r.mask)


def test_reward_source_must_be_named_and_importable():
    from lamina.recipe import PpoSpec
    from lamina.train.rlhf import reward_source

    with pytest.raises(LaminaError, match="exactly one"):
        reward_source(PpoSpec())
    with pytest.raises(LaminaError, match="ppo.reward"):
        reward_source(PpoSpec(reward="lamina.nowhere:fn"))
    with pytest.raises(LaminaError, match="module:function"):
        reward_source(PpoSpec(reward="no_colon"))
    fn, info = reward_source(PpoSpec(reward="lamina.data.preference_synth:ticket_reward"))
    assert info == {"function": "lamina.data.preference_synth:ticket_reward"} and callable(fn)


def brevity_reward(prompts, responses):
    """Rewards short replies that end cleanly: easy to climb, a clear test of the machinery."""
    return [1.0 - min(len(r.split()), 10) / 10 for r in responses]


@pytest.mark.slow
def test_ppo_raises_a_programmatic_reward_with_bounded_kl(tiny_random, tmp_path):
    from lamina.data.synthetic import task_splits
    from lamina.recipe import parse_recipe
    from lamina.train.rlhf import train_ppo

    train, held = task_splits(n_train=64, n_eval=16)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    recipe = parse_recipe(
        {
            "name": "ppo-t",
            "model": {"base": str(tiny_random)},
            "data": {
                "train": str(tmp_path / "t.jsonl"),
                "eval": str(tmp_path / "e.jsonl"),
                "licence": "internal", "provenance": SYNTHETIC_PROVENANCE,
            },
            "method": {"name": "lora", "r": 8, "alpha": 16},
            "ppo": {
                "reward": "test_ppo:brevity_reward",
                "iterations": 20,
                "rollouts": 16,
                "mini_batch": 8,
                "epochs": 2,
                "lr": 3e-3,
                "target_kl": 4.0,
                "sampling": {"max_new_tokens": 12},
            },
        }
    )
    run_dir = train_ppo(recipe, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    before, after = info["eval"]["before"], info["eval"]["after"]
    assert after["reward"] > before["reward"] + 0.2, (before, after)
    assert after["kl"] < 30 and all(m["kl"] < 40 for m in metrics)
    for key in ("reward", "kl", "entropy", "clip_fraction", "value_loss", "explained_variance", "kl_coef"):
        assert key in metrics[-1]
    assert (run_dir / "adapter").is_dir() and (run_dir / "value_head" / "head.safetensors").is_file()
