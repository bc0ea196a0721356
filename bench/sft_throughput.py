"""SFT throughput, Lamina against TRL, side by side in one process on one device.

Both tools train the same random-weight model config on the same synthetic token stream
(bench/workload.py) with LoRA r=16 on all linear layers (or full fine-tuning), bf16 on CUDA.
Lamina runs with its defaults; TRL's SFTTrainer gets packing (best-fit decreasing, padding
free) and each of the settings listed in --trl-variants, and its fastest variant is reported.

Reported per tool: tokens/s (every token that goes through attention, padding excluded),
achieved TFLOP/s at 4 x matmul-parameters per token for frozen-base methods (6 x for full
fine-tuning) — the same nominal count for both tools, so the ratio equals the tokens/s
ratio —, peak GPU memory (allocated, from before the model is built), and the completion
loss at the start and end of the timed window.

    python bench/sft_throughput.py --model qwen2.5-0.5b --tokens-per-step 32768 --steps 20
    python bench/sft_throughput.py --model tiny --device cpu --steps 4      # smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import build_config, examples, matmul_params  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def new_model(args, device, attn):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" and args.method == "lora" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(build_config(args.model), dtype=dtype, attn_implementation=attn)
    return model


def lamina_loop(args, data, device):
    """Lamina's loop for the bench's model and data, with its defaults; (loop, matmul params,
    fused kernels applied)."""
    from lamina import methods
    from lamina.data.chat import Tokenized
    from lamina.models import kernels
    from lamina.models.attention import attention_plan, register
    from lamina.recipe import FullSpec, LoraSpec, TrainSpec
    from lamina.train.build_loop import make_loop

    plan, attn = attention_plan(device)
    if attn != "sdpa":
        register()
    model = new_model(args, device, attn)
    n = matmul_params(model)
    fused = kernels.apply(model, args.lamina_kernels)
    spec_method = LoraSpec() if args.method == "lora" else FullSpec()
    model = methods.get(args.method).apply(model, spec_method)
    train = TrainSpec(tokens_per_step=args.tokens_per_step, steps=args.warmup + args.steps, lr=args.lr,
                      log_every=10**9, **({"micro_tokens": args.micro_tokens} if args.micro_tokens else {}),
                      **({"gradient_checkpointing": True} if args.lamina_checkpointing else {}))
    tokenized = [Tokenized(ids, [bool(m) for m in mask]) for ids, mask in data]
    return make_loop(model, tokenized, train, device, plan, seed=0, row_len=args.max_len), n, fused


def run_lamina(args, data, device) -> dict:
    reset_memory(device)
    loop, n, fused = lamina_loop(args, data, device)
    train = loop.spec
    loop.total_steps = args.warmup
    loop.run()
    first = float(loop.state.history[-1]["loss"])
    sync(device)
    t0, tokens0 = time.perf_counter(), loop.state.tokens
    loop.total_steps = args.warmup + args.steps
    loop.run()
    sync(device)
    seconds = time.perf_counter() - t0
    tokens = loop.state.tokens - tokens0
    last = float(loop.state.history[-1]["loss"])
    result = summarise("lamina", tokens, seconds, n, args, device, first, last)
    result["settings"] = {"attention": loop.plan, "fused_kernels": fused, "micro_tokens": loop.micro_tokens,
                          "gradient_checkpointing": train.gradient_checkpointing}
    del loop
    return result


def run_trl(args, data, device, variant: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    reset_memory(device)
    attn = "sdpa"
    model = new_model(args, device, attn)
    n = matmul_params(model)
    ds = Dataset.from_list([{"input_ids": ids, "completion_mask": mask} for ids, mask in data])
    rows_per_step = max(1, args.tokens_per_step // args.max_len)
    tokenizer = _tokenizer(build_config(args.model).vocab_size)
    counter = {"tokens": 0, "marks": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                sync(device)
                counter["t0"], counter["tok0"] = time.perf_counter(), counter["tokens"]

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                counter["marks"].append((state.global_step, logs["loss"]))

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs.get("attention_mask")
            counter["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"), max_steps=args.warmup + args.steps, learning_rate=args.lr,
        per_device_train_batch_size=rows_per_step, gradient_accumulation_steps=1, packing=True,
        max_length=args.max_len, completion_only_loss=True, bf16=device.type == "cuda",
        use_cpu=device.type == "cpu", logging_steps=1, report_to=[], save_strategy="no",
        dataloader_num_workers=0, lr_scheduler_type="cosine", **variant,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM") \
        if args.method == "lora" else None
    trainer = CountingTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=[Timer()])
    trainer.train()
    sync(device)
    seconds = time.perf_counter() - counter["t0"]
    tokens = counter["tokens"] - counter["tok0"]
    marks = counter["marks"]
    first = next((loss for step, loss in marks if step >= args.warmup), marks[0][1])
    result = summarise("trl", tokens, seconds, n, args, device, first, marks[-1][1])
    result["settings"] = {"attention": attn, **variant}
    del trainer, model
    return result


def _tokenizer(vocab: int):
    """A word-level tokenizer over the synthetic ids: TRL wants a processing class."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t1", eos_token="t2")


def summarise(tool, tokens, seconds, n_params, args, device, first_loss, last_loss) -> dict:
    per_token = (4 if args.method == "lora" else 6) * n_params
    tps = tokens / seconds
    return {
        "tool": tool, "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tps, 1),
        "tflops": round(per_token * tps / 1e12, 2), "peak_gib": peak_gib(device),
        "loss_start": round(first_loss, 4), "loss_end": round(last_loss, 4),
    }


def lamina_arguments(p: argparse.ArgumentParser) -> None:
    """The options `lamina_loop` reads (model, method, device, token budgets, Lamina's switches)."""
    p.add_argument("--model", default="tiny", choices=["tiny", "qwen2.5-0.5b", "llama-3.1-8b"])
    p.add_argument("--method", default="lora", choices=["lora", "full"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens-per-step", type=int, default=32768)
    p.add_argument("--micro-tokens", type=int, default=None, help="Lamina micro-batch budget (default: its own).")
    p.add_argument("--lamina-checkpointing", action="store_true")
    p.add_argument("--lamina-kernels", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    lamina_arguments(p)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--tools", default="lamina,trl")
    p.add_argument("--trl-variants", default='[{"use_liger_kernel": false, "gradient_checkpointing": false}]',
                   help="JSON list of extra SFTConfig settings to try for TRL; the fastest is reported.")
    p.add_argument("--workdir", default="/tmp/lamina-bench")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    vocab = build_config(args.model).vocab_size
    data = examples(args.examples, vocab, seed=0, max_len=args.max_len)
    results = {"model": args.model, "method": args.method, "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "versions": versions(), "args": vars(args), "runs": []}
    for tool in args.tools.split(","):
        if tool == "lamina":
            results["runs"].append(run_lamina(args, data, device))
        else:
            for variant in json.loads(args.trl_variants):
                try:
                    results["runs"].append(run_trl(args, data, device, variant))
                except torch.OutOfMemoryError as e:
                    results["runs"].append({"tool": "trl", "settings": variant, "error": f"OOM: {e}"[:200]})
        print(json.dumps(results["runs"][-1]), flush=True)
    report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "liger-kernel"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def report(results: dict) -> None:
    ok = [r for r in results["runs"] if "error" not in r]
    lamina = next((r for r in ok if r["tool"] == "lamina"), None)
    trl = max((r for r in ok if r["tool"] == "trl"), key=lambda r: r["tokens_per_s"], default=None)
    print(f"\n{results['model']} {results['method']} on {results['gpu'] or results['device']}")
    print(f"{'tool':8} {'tokens/s':>10} {'TFLOP/s':>8} {'peak GiB':>9} {'loss start→end':>16}  settings")
    for r in ok:
        print(f"{r['tool']:8} {r['tokens_per_s']:>10,.0f} {r['tflops']:>8.1f} {str(r['peak_gib']):>9} "
              f"{r['loss_start']:>7.3f}→{r['loss_end']:<7.3f}  {r['settings']}")
    if lamina and trl:
        print(f"ratio lamina/trl: tokens/s x{lamina['tokens_per_s'] / trl['tokens_per_s']:.2f}"
              + (f", peak memory x{lamina['peak_gib'] / trl['peak_gib']:.2f}" if lamina["peak_gib"] else ""))


if __name__ == "__main__":
    main()
