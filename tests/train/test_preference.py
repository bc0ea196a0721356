"""ORPO, SimPO and KTO: each loss against numbers worked out by hand; the packed objectives
(loss and gradients) against each sequence run alone; the unpaired format and its errors;
a run of each from a recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamina.data.formats import Preference, parse_record
from lamina.data.pairs import tokenize_pair
from lamina.data.preference_synth import preference_splits
from lamina.data.unpaired import tokenize_unpaired
from lamina.errors import LaminaError
from lamina.models.loading import load_hf_model, load_tokenizer
from lamina.recipe import SYNTHETIC_PROVENANCE, DataSpec, KtoSpec, LoraSpec, OrpoSpec, SimpoSpec, parse_recipe
from lamina.train import runner
from lamina.train.objectives import preference


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_orpo_and_simpo_losses_match_hand_computation():
    chosen, rejected = torch.tensor([-0.5, -1.0]), torch.tensor([-2.0, -0.25])
    # log odds(a) = a - log(1 - e^a); worked out for the first pair:
    # lo(-0.5) = -0.5 - log(0.393469) = 0.432644, lo(-2) = -2 - log(0.864665) = -1.854587
    lo_c, lo_r = 0.432644, -1.854587
    want0 = 0.5 + 0.1 * -_logsig(lo_c - lo_r)
    lo = [a - math.log(1 - math.exp(a)) for a in (-1.0, -0.25)]
    want1 = 1.0 + 0.1 * -_logsig(lo[0] - lo[1])
    got = preference.orpo_loss(chosen, rejected, OrpoSpec(beta=0.1)).tolist()
    assert got == pytest.approx([want0, want1], rel=1e-5)
    assert want0 == pytest.approx(0.509672, abs=1e-5)
    # SimPO, beta 2, gamma 1: z = 2 * (-0.5 + 2) - 1 = 2; 2 * (-1 + 0.25) - 1 = -2.5
    got = preference.simpo_loss(chosen, rejected, SimpoSpec(beta=2.0, gamma=1.0)).tolist()
    assert got == pytest.approx([math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.5))], rel=1e-6)


def test_kto_loss_matches_hand_computation():
    policy, ref = torch.tensor([-3.0, -3.0, -5.0]), torch.tensor([-4.0, -4.0, -4.0])  # r = 1, 1, -1
    kl = torch.tensor(0.5)
    desirable = torch.tensor([True, False, True])
    spec = KtoSpec(beta=0.1, desirable_weight=1.0, undesirable_weight=2.0)
    got = preference.kto_loss(policy, ref, kl, desirable, spec).tolist()

    def sig(x):
        return 1 / (1 + math.exp(-x))

    want = [1 - sig(0.1 * (1 - 0.5)), 2 * (1 - sig(0.1 * (0.5 - 1))), 1 - sig(0.1 * (-1 - 0.5))]
    assert got == pytest.approx(want, rel=1e-6)
    assert want[0] == pytest.approx(0.487503, abs=1e-6)


RECORDS = [
    Preference([{"role": "user", "content": "order 4821 blue kettle arrived broken"}],
               "TEAM: warehouse; ISSUE: broken; PRIORITY: normal", "TEAM: billing; ISSUE: late; PRIORITY: high"),
    Preference([{"role": "user", "content": "my red lamp is late"}], "ISSUE: late", "ISSUE: refund please now"),
    Preference([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "mug 1234 missing"}],
               "TEAM: warehouse", "no idea at all"),
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


def _alone(model, tok) -> tuple[torch.Tensor, int]:
    """(sum of log p over the labelled tokens, their number), the sequence in its own forward."""
    ids = torch.tensor([tok.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    picked = [logp[j - 1, tok.input_ids[j]] for j in range(1, len(tok.input_ids)) if tok.labels[j]]
    return torch.stack(picked).sum(), len(picked)


def _packed(objective, model, examples, micro_tokens, batches=None):
    batches = batches or objective.batches(examples, 128, micro_tokens)
    assert len(batches) >= 2  # the examples go through in more than one packed forward
    total = torch.zeros(())
    for b in batches:
        loss_sum, _ = objective.loss(model, b, "masked")
        (loss_sum / len(examples)).backward()
        total = total + loss_sum.detach()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return float(total / len(examples)), grads


def _check_grads(model, grads):
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["orpo", "simpo"])
def test_packed_reference_free_objective_matches_each_pair_alone(tiny_random, name):
    tokenizer = load_tokenizer(tiny_random)
    pairs = [tokenize_pair(tokenizer, r, i) for i, r in enumerate(RECORDS)]
    model = _policy(tiny_random)
    spec = OrpoSpec(beta=0.3) if name == "orpo" else SimpoSpec(beta=2.0, gamma=0.5)
    objective = preference.ORPO(spec) if name == "orpo" else preference.SimPO(spec)
    got, grads = _packed(objective, model, pairs, 90)
    per_pair = []
    for p in pairs:
        (sc, nc), (sr, nr) = _alone(model, p.chosen), _alone(model, p.rejected)
        ac, ar = sc / nc, sr / nr
        if name == "orpo":
            odds = (ac - torch.log(1 - torch.exp(ac))) - (ar - torch.log(1 - torch.exp(ar)))
            per_pair.append(-ac - 0.3 * torch.log(torch.sigmoid(odds)))
        else:
            per_pair.append(-torch.log(torch.sigmoid(2.0 * (ac - ar) - 0.5)))
    want = torch.stack(per_pair).mean()
    want.backward()
    assert got == pytest.approx(want.item(), rel=1e-4)
    _check_grads(model, grads)


UNPAIRED = [
    {"prompt": "order 4821 blue kettle arrived broken", "completion": "TEAM: warehouse; ISSUE: broken", "label": True},
    {"prompt": "my red lamp is late", "completion": "ISSUE: refund please", "label": False},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "mug 1234 missing"}],
     "completion": "TEAM: warehouse", "label": True},
    {"prompt": "the scarf is wrong", "completion": "no idea", "label": False},
]


def test_packed_kto_matches_each_record_alone_with_mismatched_kl(tiny_random):
    tokenizer = load_tokenizer(tiny_random)
    records = [parse_record(r, "unpaired", f"t:{i}") for i, r in enumerate(UNPAIRED)]
    examples, stats = tokenize_unpaired(tokenizer, records, DataSpec(train="x", max_length=128), "t")
    assert stats == {"records": 4, "desirable": 2, "undesirable": 2, "dropped": 0}
    model = _policy(tiny_random)
    spec = KtoSpec(beta=0.5, desirable_weight=1.0, undesirable_weight=1.5)
    objective = preference.KTO(spec, model)
    # two records per micro-batch: the KL estimate is each micro-batch's own
    batches = objective.batches(examples[:2], 128, 4096) + objective.batches(examples[2:], 128, 4096)
    got, grads = _packed(objective, model, examples, 0, batches)

    def sums(tok):
        with torch.no_grad(), model.disable_adapter():
            ref = _alone(model, tok)[0]
        return _alone(model, tok)[0], ref

    per_record = []
    for chunk in (examples[:2], examples[2:]):
        # the KL estimate: each prompt with the other record's reply, by hand
        kls = []
        for k, x in enumerate(chunk):
            other = chunk[(k + 1) % 2]
            cut_x, cut_o = x.tok.labels.index(True), other.tok.labels.index(True)
            from lamina.data.chat import Tokenized

            swapped = Tokenized(x.tok.input_ids[:cut_x] + other.tok.input_ids[cut_o:],
                                [False] * cut_x + other.tok.labels[cut_o:])
            pol, ref = sums(swapped)
            kls.append((pol - ref).detach())
        z = torch.stack(kls).mean().clamp(min=0)
        for x in chunk:
            pol, ref = sums(x.tok)
            r = pol - ref
            if x.desirable:
                per_record.append(1.0 * (1 - torch.sigmoid(0.5 * (r - z))))
            else:
                per_record.append(1.5 * (1 - torch.sigmoid(0.5 * (z - r))))
    want = torch.stack(per_record).mean()
    want.backward()
    assert got == pytest.approx(want.item(), rel=1e-4)
    _check_grads(model, grads)


def test_unpaired_format_errors_name_the_line():
    with pytest.raises(LaminaError, match=r"f\.jsonl:3.*label"):
        parse_record({"prompt": "p", "completion": "c", "label": "yes"}, "unpaired", "f.jsonl:3")
    with pytest.raises(LaminaError, match="missing `prompt`"):
        parse_record({"completion": "c", "label": True}, "unpaired", "f.jsonl:1")
    # other keys are kept as metadata (issue 16), so a pair's `chosen` is not a `completion`
    with pytest.raises(LaminaError, match="`completion` must be a string"):
        parse_record({"prompt": "p", "chosen": "c", "label": True}, "unpaired", "f.jsonl:1")
    rec = parse_record({"prompt": "p", "completion": "c", "label": False}, "unpaired", "f.jsonl:1")
    assert rec.label is False and rec.prompt == [{"role": "user", "content": "p"}]


def _recipe(base, train, objective, fmt, **extra):
    return parse_recipe({
        "name": f"{objective}-t", "model": {"base": str(base)},
        "data": {"train": str(train), "format": fmt, "licence": "internal", "provenance": SYNTHETIC_PROVENANCE, "max_length": 128},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"objective": objective, "steps": 1, "tokens_per_step": 1024, "lr": 1e-3, "log_every": 1},
        **extra,
    })


def test_kto_refuses_paired_data_with_a_clear_error(tiny_random, tmp_path, workspace):
    pairs, _ = preference_splits(n_train=8, n_eval=2)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    with pytest.raises(LaminaError, match=r"kto needs unpaired records.*data.format: unpaired"):
        runner.train(_recipe(tiny_random, path, "kto", "preference"), progress=False)
    assert not (workspace / "runs").exists()


# orpo and simpo differ from kto only in the objective built (their losses are checked above)
@pytest.mark.parametrize("objective", ["kto", pytest.param("orpo", marks=pytest.mark.slow),
                                       pytest.param("simpo", marks=pytest.mark.slow)])
def test_each_objective_runs_from_a_recipe(tiny_random, tmp_path, objective):
    if objective == "kto":
        path = tmp_path / "u.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in UNPAIRED * 3))
        recipe = _recipe(tiny_random, path, "kto", "unpaired", kto={"beta": 0.2})
    else:
        pairs, _ = preference_splits(n_train=12, n_eval=2)
        path = tmp_path / "p.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
        recipe = _recipe(tiny_random, path, objective, "preference")
    run_dir = runner.train(recipe, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert info["objective"] == objective and info["status"] == "completed"
    assert math.isfinite(metrics[-1]["loss"]) and metrics[-1]["loss"] > 0
    assert ("kl" in metrics[-1]) == (objective == "kto")
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
