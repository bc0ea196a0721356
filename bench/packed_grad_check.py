"""Correctness beside speed: gradients of Lamina's packed step against an unpacked reference.

A small random model of the chosen family; LoRA r=16 on all linear layers. The packed step
(varlen attention on CUDA, block mask elsewhere; LM head on labelled positions only; the
device's training precision) is compared with a plain per-example fp32 forward on the same
weights. Prints the relative error of every LoRA gradient (‖g - g_ref‖ / ‖g_ref‖), worst first.

    python bench/packed_grad_check.py --family qwen2.5-0.5b
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import CONFIGS, examples  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="qwen2.5-0.5b", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tolerance", type=float, default=None)
    args = p.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM

    from lamina.data.chat import Tokenized
    from lamina.data.packing import micro_batches
    from lamina.methods import lora
    from lamina.models.attention import attention_plan, register
    from lamina.recipe import LoraSpec
    from lamina.train.objectives.sft import SFT

    device = torch.device(args.device)
    spec = dict(CONFIGS[args.family])
    spec.update(num_hidden_layers=2, vocab_size=4096)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    plan, attn = attention_plan(device)
    register()
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").to(device)
    ref = lora.apply(ref, LoraSpec())
    with torch.no_grad():  # non-zero B so every LoRA weight gets a gradient signal
        for n, p_ in ref.named_parameters():
            if "lora_B" in n:
                p_.normal_(0, 0.02)
    fast = copy.deepcopy(ref)
    train_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = fast.get_base_model()
    base.set_attn_implementation(attn)
    for p_ in fast.parameters():
        if not p_.requires_grad:
            p_.data = p_.data.to(train_dtype)
    data = [Tokenized(ids, [bool(m) for m in mask]) for ids, mask in examples(12, 4096, seed=1, max_len=300)]
    (batch,) = micro_batches(data, row_len=1024, micro_tokens=10**9)
    batch = batch.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        loss_sum, _ = SFT.loss(fast, batch, plan)
    (loss_sum / batch.n_loss).backward()
    packed = {n: p_.grad.float() for n, p_ in fast.named_parameters() if p_.requires_grad}
    fast.zero_grad()
    base.set_attn_implementation("sdpa")

    def unpacked(model, cast):
        total = 0.0
        for ex in data:
            ids = torch.tensor([ex.input_ids], device=device)
            with cast:
                logits = model(input_ids=ids).logits[0, :-1].float()
            mask = torch.tensor(ex.labels[1:], device=device)
            total = total + F.cross_entropy(logits[mask], ids[0, 1:][mask], reduction="sum")
        (total / batch.n_loss).backward()
        return total / batch.n_loss, {n: p_.grad.float() for n, p_ in model.named_parameters() if p_.requires_grad}

    ref_loss, reference = unpacked(ref, torch.autocast(device.type, enabled=False))
    _, same_precision = unpacked(fast, autocast)

    def worst(grads):
        return max(((grads[n] - r).norm() / r.norm().clamp_min(1e-12)).item() for n, r in reference.items())

    err_packed, err_plain = worst(packed), worst(same_precision)
    # Packing must add no error beyond the training precision's own: compare with the plain
    # per-example forward at the same precision (bf16 on CUDA), both against fp32.
    limit = args.tolerance or (1.5 * err_plain + 1e-3 if device.type == "cuda" else 1e-4)
    ok = err_packed < limit
    print(f"{args.family}: loss packed {float(loss_sum / batch.n_loss):.5f} vs fp32 reference {float(ref_loss):.5f}; "
          f"worst LoRA-gradient relative error vs fp32: packed {plan} {err_packed:.2e}, unpacked same precision "
          f"{err_plain:.2e} ({len(reference)} tensors); limit {limit:.2e}: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
