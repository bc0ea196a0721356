"""DPO: each loss against hand-computed values; the packed objective (loss and gradients)
against an unpacked computation written out by hand; precomputed reference; bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamina.data.formats import Preference
from lamina.data.pairs import tokenize_pair
from lamina.data.preference_synth import preference_splits
from lamina.errors import LaminaError
from lamina.models.loading import load_hf_model, load_tokenizer
from lamina.recipe import SYNTHETIC_PROVENANCE, DpoSpec, LoraSpec, parse_recipe
from lamina.train import runner
from lamina.train.objectives import dpo


def test_each_loss_matches_its_formula_by_hand():
    margin = torch.tensor([2.0, -1.0, 0.0])
    beta, eps = 0.5, 0.1

    def logsig(x):
        return -math.log1p(math.exp(-x))

    got = dpo.sigmoid_loss(margin, DpoSpec(beta=beta)).tolist()
    assert got == pytest.approx([-logsig(1.0), -logsig(-0.5), math.log(2)], rel=1e-6)
    got = dpo.sigmoid_loss(margin, DpoSpec(beta=beta, label_smoothing=eps)).tolist()
    want = [-(1 - eps) * logsig(z) - eps * logsig(-z) for z in (1.0, -0.5, 0.0)]
    assert got == pytest.approx(want, rel=1e-6)
    # IPO: (m - 1/(2 beta))^2 with 1/(2*0.5) = 1
    assert dpo.ipo_loss(margin, DpoSpec(beta=beta)).tolist() == pytest.approx([1.0, 4.0, 1.0])
    # hinge: max(0, 1 - beta m)
    assert dpo.hinge_loss(margin, DpoSpec(beta=beta)).tolist() == pytest.approx([0.0, 1.5, 1.0])
    # the gradient of the sigmoid loss w.r.t. m is -beta * sigmoid(-beta m)
    m = torch.tensor([0.7], requires_grad=True)
    dpo.sigmoid_loss(m, DpoSpec(beta=beta)).sum().backward()
    assert m.grad.item() == pytest.approx(-beta / (1 + math.exp(beta * 0.7)), rel=1e-6)


RECORDS = [
    Preference(
        [{"role": "user", "content": "order 4821 blue kettle arrived broken"}],
        "ORDER: 4821; ITEM: blue kettle; ISSUE: broken",
        "ORDER: 4812; ITEM: blue kettle; ISSUE: broken",
    ),
    Preference([{"role": "user", "content": "my red lamp is late"}], "ISSUE: late", "ISSUE: refund please"),
    Preference(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "mug 1234 missing"}],
        "ORDER: 1234; ITEM: mug",
        "no idea",
    ),
]


def _policy(tiny_random):
    from lamina import methods

    torch.manual_seed(3)
    model = methods.get("lora").apply(load_hf_model(tiny_random), LoraSpec(r=4, alpha=8))
    with torch.no_grad():  # move the adapter away from zero, so policy and reference differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _unpacked_seq_logp(model, tok) -> torch.Tensor:
    """Sum of log p(token) over the labelled tokens of one sequence, in its own forward."""
    ids = torch.tensor([tok.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    total = torch.zeros(())
    for j in range(1, len(tok.input_ids)):
        if tok.labels[j]:
            total = total + logp[j - 1, tok.input_ids[j]]
    return total


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_packed_objective_matches_hand_computation_loss_and_gradients(tiny_random, loss):
    tokenizer = load_tokenizer(tiny_random)
    spec = DpoSpec(beta=0.3, loss=loss, label_smoothing=0.1 if loss == "sigmoid" else 0.0)
    pairs = [tokenize_pair(tokenizer, r, i) for i, r in enumerate(RECORDS)]

    model = _policy(tiny_random)
    objective = dpo.DPO(spec, model, "lora")
    # A small micro budget: the three pairs go through in more than one packed forward.
    batches = objective.batches(pairs, 128, 90)
    assert len(batches) >= 2 and sum(b.n_pairs for b in batches) == 3
    total = torch.zeros(())
    for b in batches:
        loss_sum, metrics = objective.loss(model, b, "masked")
        (loss_sum / 3).backward()
        total = total + loss_sum.detach()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    # By hand: each sequence alone, the reference with the adapter switched off.
    margins = []
    for p in pairs:
        with torch.no_grad(), model.disable_adapter():
            ref_c, ref_r = _unpacked_seq_logp(model, p.chosen), _unpacked_seq_logp(model, p.rejected)
        pol_c, pol_r = _unpacked_seq_logp(model, p.chosen), _unpacked_seq_logp(model, p.rejected)
        margins.append((pol_c - ref_c) - (pol_r - ref_r))
    m = torch.stack(margins)
    b, e = spec.beta, spec.label_smoothing
    if loss == "sigmoid":
        per_pair = -(1 - e) * torch.log(torch.sigmoid(b * m)) - e * torch.log(torch.sigmoid(-b * m))
    elif loss == "ipo":
        per_pair = (m - 1 / (2 * b)) ** 2
    else:
        per_pair = torch.clamp(1 - b * m, min=0)
    want = per_pair.mean()
    want.backward()
    assert float(total / 3) == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(packed_grads[n], p.grad, rtol=1e-3, atol=1e-5)
    assert torch.any(m.detach() != 0)


def _write_pairs(path, n):
    train, _ = preference_splits(n_train=n, n_eval=4)
    path.write_text("".join(json.dumps(r) + "\n" for r in train))
    return path


def _dpo_recipe(base, train, **dpo_spec):
    return parse_recipe(
        {
            "name": "dpo-t",
            "model": {"base": str(base)},
            "data": {"train": str(train), "format": "preference", "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128},
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"objective": "dpo", "steps": 2, "tokens_per_step": 1024, "lr": 1e-3, "log_every": 1},
            "dpo": dpo_spec,
        }
    )


def test_precomputed_reference_is_stored_and_gives_the_same_training(tiny_random, tmp_path):
    from safetensors.torch import load_file

    train = _write_pairs(tmp_path / "pairs.jsonl", 24)
    live = runner.train(_dpo_recipe(tiny_random, train), progress=False)
    stored = runner.train(_dpo_recipe(tiny_random, train, precompute_reference=True), progress=False)
    tensors = load_file(str(stored / dpo.REFERENCE_FILE))
    n_pairs = json.loads((stored / "run.json").read_text())["data"]["pairs"]
    assert n_pairs >= 18  # intake holds a share out for evaluation
    assert (
        tensors["chosen_offsets"].shape[0] == n_pairs + 1
        and tensors["rejected_offsets"].shape[0] == n_pairs + 1
    )
    assert int(tensors["chosen_offsets"][-1]) == tensors["chosen"].numel()
    assert torch.all(tensors["chosen"] <= 0) and tensors["chosen"].numel() > 24
    live_m = [json.loads(x) for x in (live / "metrics.jsonl").read_text().splitlines()]
    stored_m = [json.loads(x) for x in (stored / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(live_m, stored_m, strict=True):
        for key in ("loss", "reward_margin", "accuracy", "chosen_logp", "rejected_logp", "kl"):
            assert a[key] == pytest.approx(b[key], abs=2e-4), key
    # The first step starts at the reference: zero margin, loss log 2, no KL.
    assert live_m[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert live_m[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert live_m[1]["kl"] > 0
    info = json.loads((live / "run.json").read_text())
    assert info["objective"] == "dpo" and info["data"]["pairs"] == n_pairs


def test_full_finetuning_reference_is_a_frozen_copy(tiny_random):
    from lamina import methods
    from lamina.recipe import FullSpec

    model = methods.get("full").apply(load_hf_model(tiny_random), FullSpec())
    objective = dpo.DPO(DpoSpec(), model, "full")
    assert objective.frozen is not model
    assert not any(p.requires_grad for p in objective.frozen.parameters())
    before = {n: p.clone() for n, p in objective.frozen.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    assert all(torch.equal(before[n], p) for n, p in objective.frozen.named_parameters())


def test_chat_data_for_dpo_is_refused_naming_the_file_and_nothing_is_written(
    tiny_random, tmp_path, workspace
):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        )
        + "\n"
    )
    recipe = _dpo_recipe(tiny_random, chat)
    recipe.data.format = "chat"
    with pytest.raises(LaminaError, match="preference"):
        runner.train(recipe, progress=False)
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())
