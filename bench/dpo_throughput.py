"""DPO throughput, Lamina against TRL's DPOTrainer, side by side in one process on one device.

Same random-weight model config and the same preference pairs for both (prompt + a chosen
completion that copies a slice of the prompt + a rejected completion of random tokens);
LoRA r=16 on all linear layers, bf16 on CUDA; the reference is the model with its adapter
switched off in both tools. Lamina puts chosen and rejected through one packed forward;
TRL pads (its padding-free DPO path is disabled in 1.16).

Reported as in sft_throughput.py: tokens/s (chosen + rejected tokens, padding excluded),
TFLOP/s at 4 x matmul-parameters per token (the reference forward is extra work for both
tools and not counted), peak memory, loss at the start and end of the timed window.

    python bench/dpo_throughput.py --model qwen2.5-0.5b --tokens-per-step 32768 --steps 10
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import _tokenizer, new_model, report, reset_memory, summarise, sync, versions  # noqa: E402
from workload import build_config, examples, matmul_params  # noqa: E402


def pairs_data(n: int, vocab: int, max_len: int):
    """(prompt, chosen, rejected) token lists."""
    rng = random.Random(1)
    out = []
    for ids, mask in examples(n, vocab, seed=0, max_len=max_len // 2):
        cut = mask.index(1)
        prompt, chosen = ids[:cut], ids[cut:]
        rejected = [rng.randrange(16, 2016) for _ in chosen]
        out.append((prompt, chosen, rejected))
    return out


def run_lamina(args, data, device) -> dict:
    from lamina import methods
    from lamina.data.chat import Tokenized
    from lamina.data.pairs import Pair
    from lamina.models import kernels
    from lamina.models.attention import attention_plan, register
    from lamina.recipe import DpoSpec, LoraSpec, TrainSpec
    from lamina.train.build_loop import make_loop
    from lamina.train.objectives.dpo import DPO

    reset_memory(device)
    plan, attn = attention_plan(device)
    if attn != "sdpa":
        register()
    model = new_model(args, device, attn)
    n = matmul_params(model)
    fused = kernels.apply(model, "auto")
    model = methods.get("lora").apply(model, LoraSpec())
    objective = DPO(DpoSpec(), model, "lora")

    def side(prompt, reply):
        return Tokenized(prompt + reply, [False] * len(prompt) + [True] * len(reply))

    pairs = [Pair(side(p, c), side(p, r), i) for i, (p, c, r) in enumerate(data)]
    spec = TrainSpec(objective="dpo", tokens_per_step=args.tokens_per_step, steps=args.warmup + args.steps,
                     lr=args.lr, log_every=10**9)
    loop = make_loop(model, pairs, spec, device, plan, seed=0, row_len=args.max_len, objective=objective)
    loop.total_steps = args.warmup
    loop.run()
    first = float(loop.state.history[-1]["loss"])
    sync(device)
    t0, tokens0 = time.perf_counter(), loop.state.tokens
    loop.total_steps = args.warmup + args.steps
    loop.run()
    sync(device)
    result = summarise("lamina", loop.state.tokens - tokens0, time.perf_counter() - t0, n, args, device, first,
                       float(loop.state.history[-1]["loss"]))
    result["settings"] = {"attention": plan, "fused_kernels": fused, "micro_tokens": loop.micro_tokens}
    return result


def run_trl(args, data, device, variant: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    reset_memory(device)
    model = new_model(args, device, "sdpa")
    n = matmul_params(model)

    def text(ids):
        return " ".join(f"t{i}" for i in ids)

    ds = Dataset.from_list([{"prompt": text(p), "chosen": " " + text(c), "rejected": " " + text(r)}
                            for p, c, r in data])
    mean_pair = sum(len(p) * 2 + len(c) + len(r) for p, c, r in data) / len(data)
    batch = max(1, int(args.tokens_per_step / mean_pair))
    counter = {"tokens": 0, "marks": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                sync(device)
                counter["t0"], counter["tok0"] = time.perf_counter(), counter["tokens"]

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                counter["marks"].append((state.global_step, logs["loss"]))

    class CountingTrainer(DPOTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs.get("attention_mask")
            counter["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    config = DPOConfig(
        output_dir=str(Path(args.workdir) / "trl-dpo"), max_steps=args.warmup + args.steps, learning_rate=args.lr,
        per_device_train_batch_size=batch, max_length=args.max_len, bf16=device.type == "cuda",
        use_cpu=device.type == "cpu", logging_steps=1, report_to=[], save_strategy="no", beta=0.1, **variant,
    )
    tokenizer = _tokenizer(build_config(args.model).vocab_size)
    trainer = CountingTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer,
                              peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                     task_type="CAUSAL_LM"), callbacks=[Timer()])
    trainer.train()
    sync(device)
    marks = counter["marks"]
    first = next((loss for step, loss in marks if step >= args.warmup), marks[0][1])
    result = summarise("trl", counter["tokens"] - counter["tok0"], time.perf_counter() - counter["t0"], n, args,
                       device, first, marks[-1][1])
    result["settings"] = {"attention": "sdpa", "pairs_per_step": batch, **variant}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", choices=["tiny", "qwen2.5-0.5b", "llama-3.1-8b"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens-per-step", type=int, default=32768)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--tools", default="lamina,trl")
    p.add_argument("--trl-variants", default='[{"gradient_checkpointing": true}]')
    p.add_argument("--workdir", default="/tmp/lamina-bench")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    args.method = "lora"
    device = torch.device(args.device)
    data = pairs_data(args.examples, build_config(args.model).vocab_size, args.max_len)
    results = {"model": args.model, "method": "dpo-lora", "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "versions": versions(), "args": vars(args), "runs": []}
    for tool in args.tools.split(","):
        variants = [{}] if tool == "lamina" else json.loads(args.trl_variants)
        for variant in variants:
            try:
                results["runs"].append(run_lamina(args, data, device) if tool == "lamina"
                                       else run_trl(args, data, device, variant))
            except torch.OutOfMemoryError as e:
                results["runs"].append({"tool": tool, "settings": variant, "error": f"OOM: {e}"[:200]})
            print(json.dumps(results["runs"][-1]), flush=True)
    report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
