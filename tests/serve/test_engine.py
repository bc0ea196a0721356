"""The batching engine: rows of different LoRA adapters in one batch decode exactly as each
does alone, and as PEFT's own `generate` does; requests join and leave a running batch."""

from __future__ import annotations

import time

import pytest
import torch


@pytest.fixture(scope="module")
def two_adapters(tiny_random, tmp_path_factory):
    from peft import LoraConfig, PeftModel, get_peft_model

    from lamina.models.loading import load_hf_model, load_tokenizer

    root = tmp_path_factory.mktemp("adapters")
    for i in range(2):
        model = get_peft_model(load_hf_model(tiny_random, torch.device("cpu")),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
        torch.manual_seed(100 + i)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.5)
        model.save_pretrained(root / f"a{i}")
    model = PeftModel.from_pretrained(load_hf_model(tiny_random, torch.device("cpu")), str(root / "a0"),
                                      adapter_name="a0")
    model.load_adapter(str(root / "a1"), adapter_name="a1")
    model.lamina_dirs = [root / "a0", root / "a1"]
    tok = load_tokenizer(tiny_random)
    texts = ["my kettle arrived broken", "refund order 4821", "hi", "the blue lamp is missing a part, send one"]
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                           add_generation_prompt=True), add_special_tokens=False)["input_ids"]
               for t in texts]
    return model.eval(), tok, prompts


def test_mixed_adapter_batch_equals_each_alone_and_peft_generate(two_adapters):
    from lamina.serve.engine import Params, eos_ids, generate_batch

    model, tok, prompts = two_adapters
    eos = eos_ids(model, tok)
    names = ["a0", "a1", None, "a1"]
    params = Params(max_tokens=16)
    mixed = generate_batch(model, prompts, params, eos, adapters=names)
    alone = [generate_batch(model, [p], params, eos, adapters=[n])[0] for p, n in zip(prompts, names, strict=True)]
    assert mixed == alone
    assert len({tuple(m) for m in mixed[:3]}) == 3  # the adapters really answer differently
    with torch.inference_mode():
        for prompt, name, got in zip(prompts, names, mixed, strict=True):
            ids = torch.tensor([prompt])
            kw = {"max_new_tokens": 16, "do_sample": False, "eos_token_id": list(eos), "pad_token_id": tok.pad_token_id}
            if name is None:
                with model.disable_adapter():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            else:
                model.set_adapter(name)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            assert [t for t in out[0, len(prompt):].tolist() if t not in eos] == got


def test_stacked_adapters_decode_as_peft_does_mixed_or_alone(two_adapters, tiny_random):
    """The serving path: adapters stacked on a plain base (lora_stack.py), rows mixed."""
    from lamina.models.loading import load_hf_model
    from lamina.serve.engine import Params, eos_ids, generate_batch
    from lamina.serve.lora_stack import LoraStack, supports

    peft_model, tok, prompts = two_adapters
    base = load_hf_model(tiny_random, torch.device("cpu")).eval()
    stack = LoraStack(base)
    for name, path in zip(["a0", "a1"], peft_model.lamina_dirs, strict=True):
        assert supports(path)
        stack.add(name, path)
    eos = eos_ids(base, tok)
    names = ["a0", "a1", None, "a1"]
    params = Params(max_tokens=16)
    mixed = generate_batch(base, prompts, params, eos, adapters=names, stack=stack)
    alone = [generate_batch(base, [p], params, eos, adapters=[n], stack=stack)[0]
             for p, n in zip(prompts, names, strict=True)]
    assert mixed == alone
    assert mixed == generate_batch(peft_model, prompts, params, eos, adapters=names)  # PEFT's mixed batch
    stack.remove("a0")  # the other adapter keeps its own weights
    assert generate_batch(base, prompts[1:2], params, eos, adapters=["a1"], stack=stack)[0] == mixed[1]
    assert stack.width == 4 and set(stack.adapters) == {"a1"}


def test_requests_join_a_running_batch_and_free_their_cache(two_adapters):
    from lamina.serve.engine import Engine, Params, Sequence, eos_ids

    model, tok, prompts = two_adapters
    engine = Engine(model, eos_ids(model, tok), max_batch=8, multi_adapter=True)
    outs: dict[int, list[int]] = {0: [], 1: [], 2: []}
    sizes = []

    def emit_to(i):
        return lambda token, finish: outs[i].append(token) if token is not None else None

    engine.submit(Sequence(prompts[3], Params(max_tokens=12), emit_to(0), "a0"))
    with torch.inference_mode():
        for _ in range(4):
            engine.step()
        engine.submit(Sequence(prompts[0], Params(max_tokens=3), emit_to(1), "a1"))
        engine.submit(Sequence(prompts[1], Params(max_tokens=20), emit_to(2), None))
        while engine.step():
            sizes.append(engine.load())
    assert max(s["running"] for s in sizes) == 3  # both joined the running batch
    assert engine.load() == {"running": 0, "waiting": 0, "kv_used": 0, "kv_held": 0}  # all freed
    from lamina.serve.engine import generate_batch

    eos = eos_ids(model, tok)
    assert outs[0] == generate_batch(model, [prompts[3]], Params(max_tokens=12), eos, adapters=["a0"])[0]
    assert outs[1] == generate_batch(model, [prompts[0]], Params(max_tokens=3), eos, adapters=["a1"])[0]
    assert outs[2] == generate_batch(model, [prompts[1]], Params(max_tokens=20), eos, adapters=[None])[0]


def test_seeded_sampling_is_reproducible_and_top_p_narrows(two_adapters):
    from lamina.serve.engine import Params, eos_ids, generate_batch

    model, tok, prompts = two_adapters
    eos = eos_ids(model, tok)
    a = generate_batch(model, prompts[:2], Params(max_tokens=10, temperature=1.0, seed=3), eos, adapters=["a0", "a1"])
    b = generate_batch(model, prompts[:2], Params(max_tokens=10, temperature=1.0, seed=3), eos, adapters=["a0", "a1"])
    assert a == b
    greedy = generate_batch(model, prompts[:1], Params(max_tokens=10), eos, adapters=["a0"])
    tiny_p = generate_batch(model, prompts[:1], Params(max_tokens=10, temperature=1.0, top_p=1e-6, seed=5), eos,
                            adapters=["a0"])
    assert tiny_p == greedy  # top_p that keeps one token is greedy


@pytest.mark.parametrize("method", ["ia3", "prompt"])
def test_methods_on_their_own_path_match_offline_generation(method, tiny_random):
    """IA3 (an own model, KV-cached) and prompt tuning (no cache, one row at a time) decode as
    `lamina.models.generate` does for them."""
    from pydantic import TypeAdapter

    from lamina import methods
    from lamina.models.generate import generate
    from lamina.models.loading import load_hf_model, load_tokenizer
    from lamina.recipe import MethodSpec
    from lamina.serve.engine import Params, eos_ids, generate_batch

    torch.manual_seed(0)
    model = methods.get(method).apply(load_hf_model(tiny_random, torch.device("cpu")),
                                      TypeAdapter(MethodSpec).validate_python({"name": method}))
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(1.0, 0.5)
    model.eval()
    tok = load_tokenizer(tiny_random)
    chats = [[{"role": "user", "content": t}] for t in ("kettle broken", "refund order 4821 now")]
    expected = generate(model, tok, chats, max_new_tokens=8)
    prompts = [tok(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for c in chats]
    got = generate_batch(model, prompts, Params(max_tokens=8), eos_ids(model, tok))
    assert [tok.decode(g, skip_special_tokens=True).strip() for g in got] == expected


def test_a_failing_step_ends_its_batch_and_the_engine_keeps_serving(two_adapters):
    from lamina.serve.engine import Engine, Params, Sequence, eos_ids

    model, tok, prompts = two_adapters
    engine = Engine(model, eos_ids(model, tok), multi_adapter=True)
    ends = []
    engine.submit(Sequence(prompts[0], Params(max_tokens=4), lambda t, f: f and ends.append(f), "no-such-adapter"))
    engine.start()
    try:
        deadline = time.time() + 30
        while not ends and time.time() < deadline:
            time.sleep(0.01)
        assert ends == ["error"] and engine.thread.is_alive()
        engine.submit(Sequence(prompts[0], Params(max_tokens=4), lambda t, f: f and ends.append(f), "a0"))
        while len(ends) < 2 and time.time() < deadline:
            time.sleep(0.01)
        assert ends == ["error", "length"]
    finally:
        engine.stop()


def test_decode_attention_matches_sdpa_with_a_padding_mask():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lamina.serve.decode_attention import attention

    class Layer:
        is_causal, training, num_key_value_groups = True, False, 4

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 8, 1, 16), torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False  # a left-padded row
    ours, _ = attention(Layer(), q, k, v, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(Layer(), q, k, v, mask, scaling=0.25)
    assert ours.shape == theirs.shape == (3, 1, 8, 16)
    assert torch.allclose(ours, theirs, atol=1e-6)
