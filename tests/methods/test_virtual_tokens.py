"""Prompt and prefix tuning: every packed example sees the virtual tokens, exactly as if unpacked."""

from __future__ import annotations

import pytest
import torch
from method_helpers import base, examples, packed_batch, sft_loss

from lamina import methods
from lamina.data.synthetic import task_splits
from lamina.recipe import PrefixSpec, PromptSpec

SPECS = {
    "prompt": PromptSpec(num_virtual_tokens=5),
    "prefix": PrefixSpec(num_virtual_tokens=5),
    "prefix_projection": PrefixSpec(num_virtual_tokens=5, projection=True, projection_hidden=32),
}


def peft_reference_loss(model, tokenizer, n: int) -> torch.Tensor:
    """Mean assistant-token loss through PEFT's own forward, one example per call."""
    total, count = 0.0, 0
    for ex in examples(tokenizer, n):
        ids = torch.tensor([ex.input_ids])
        labels = torch.tensor([[t if lab else -100 for t, lab in zip(ex.input_ids, ex.labels, strict=True)]])
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        logits = out.logits[0, -ids.shape[1] :][:-1]
        total = total + torch.nn.functional.cross_entropy(
            logits.float(), labels[0, 1:], reduction="sum", ignore_index=-100
        )
        count += int((labels[0, 1:] != -100).sum())
    return total / count


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_packed_loss_and_gradients_match_peft_unpacked(tiny_random, kind):
    spec = SPECS[kind]
    model, tokenizer = base(tiny_random)
    model = methods.get(spec.name).apply(model, spec)
    with torch.no_grad():  # move the virtual tokens away from their init so the test sees them
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = packed_batch(tokenizer)
    ours = sft_loss(model, batch)
    ours_grads = torch.autograd.grad(ours, params)
    ref = peft_reference_loss(model, tokenizer, 6)
    ref_grads = torch.autograd.grad(ref, params)
    assert abs(float(ours) - float(ref)) < 1e-5
    for a, b in zip(ours_grads, ref_grads, strict=True):
        assert float(a.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_without_the_hook_the_virtual_tokens_would_be_ignored(tiny_random):
    """The reason for the hook: the plain decoder path gives no gradient to the prompt."""
    model, tokenizer = base(tiny_random)
    model = methods.get("prompt").apply(model, SPECS["prompt"])
    del model.lamina_hidden_states
    loss = sft_loss(model, packed_batch(tokenizer))
    assert not loss.requires_grad  # no path from the trainable prompt to the loss


def test_prefix_with_gradient_checkpointing_is_refused_not_silently_untrained(tiny_random):
    """transformers drops the cache inside checkpointed layers: the prefix would get no gradient."""
    from lamina.errors import LaminaError

    model, tokenizer = base(tiny_random)
    model = methods.get("prefix").apply(model, SPECS["prefix"])
    model.get_base_model().gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    model.train()
    with pytest.raises(LaminaError, match="train.gradient_checkpointing"):
        sft_loss(model, packed_batch(tokenizer))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_generation_keeps_the_virtual_tokens_for_every_new_token(tiny_random, kind):
    """Greedy generation equals step-by-step argmax of the full forward (which applies the
    virtual tokens): transformers' cached `generate` lost the prefix after the first token."""
    from lamina.models.generate import encode_prompts, generate

    spec = SPECS[kind]
    model, tokenizer = base(tiny_random)
    model = methods.get(spec.name).apply(model, spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    prompts = [r["messages"][:-1] for r in task_splits(n_train=2, n_eval=0)[0]]
    got = generate(model, tokenizer, prompts, max_new_tokens=6)
    model.eval()
    for prompt, text in zip(prompts, got, strict=True):
        ids = encode_prompts(tokenizer, [prompt], torch.device("cpu"))["input_ids"]
        want = []
        with torch.no_grad():
            for _ in range(6):
                token = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].argmax()
                if token == tokenizer.eos_token_id:
                    break
                want.append(int(token))
                ids = torch.cat([ids, token.view(1, 1)], 1)
        assert text == tokenizer.decode(want, skip_special_tokens=True).strip()


def test_sequence_scores_of_a_prompt_tuned_model_skip_its_virtual_positions(tiny_random):
    """The eval suites score sequences by log-likelihood; prompt tuning returns logits for its
    virtual tokens too, which must not be read as the input's."""
    from lamina.eval.scoring import score_sequences

    model, tokenizer = base(tiny_random)
    model = methods.get("prompt").apply(model, SPECS["prompt"])
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    seqs = [(ex.input_ids, ex.labels) for ex in examples(tokenizer, 3)]
    scored = score_sequences(model, seqs, batch_size=4, pad_id=0)
    for (ids, labels), got in zip(seqs, scored, strict=True):
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -len(ids) :].float()
        logp = torch.log_softmax(logits[:-1], -1).gather(-1, x[0, 1:, None]).squeeze(-1)
        want = logp[torch.tensor(labels[1:])].sum()
        assert got.n_tokens == sum(labels[1:])
        assert abs(got.logprob - float(want)) < 1e-3 * max(1.0, abs(float(want)))
