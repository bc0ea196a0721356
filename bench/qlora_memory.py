"""QLoRA against bf16 LoRA: peak memory and tokens/s at equal tokens per step.

The model is the public Llama-3.1-8B architecture with random weights (built from its config
with `from_config`, nothing downloaded), written once as safetensors to a scratch directory so
both methods load it the way a run does: LoRA on a bf16 base, QLoRA on an NF4 base with double
quantisation (bitsandbytes), LoRA r=16 on all linear layers for both, through Lamina's own
method modules and training loop. Each method runs in its own process, so one's memory
cannot leak into the other's peak.

Reported per method: peak GPU memory over the training steps (allocated, weights included),
memory held by the weights after loading, tokens/s over the timed steps, loss at the start
and end. On CPU (smoke check) the peak is the process's maximum resident set.

    python bench/qlora_memory.py --arch llama-3.1-8b --tokens-per-step 16384 --steps 8
    python bench/qlora_memory.py --arch tiny --steps 2 --warmup 1 --tokens-per-step 1024   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import build_config, examples  # noqa: E402

GIB = 1024**3


def write_random_model(arch: str, directory: Path, device: torch.device) -> Path:
    """Random bf16 weights of the architecture, saved as a Hugging Face directory."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(build_config(arch), dtype=torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return directory


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build(method: str, model_dir: Path, device: torch.device, args):
    from lamina import methods
    from lamina.methods import qlora
    from lamina.models.attention import attention_plan
    from lamina.models.loading import load_hf_model
    from lamina.recipe import LoraSpec, QloraSpec

    plan, attn = attention_plan(device)
    if method == "qlora":
        spec = QloraSpec(r=args.r, alpha=2 * args.r, optimizer=args.qlora_optimizer)
        model = qlora.load_base(model_dir, device, spec, False, attn)
    else:
        spec = LoraSpec(r=args.r, alpha=2 * args.r)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = load_hf_model(model_dir, device, dtype, attn=attn)
    return methods.get(method).apply(model, spec), plan


def run_one(method: str, model_dir: Path, args) -> dict:
    """Train `steps` timed steps (after `warmup`) of one method; returns its figures."""
    from lamina.data.chat import Tokenized
    from lamina.recipe import TrainSpec
    from lamina.train.build_loop import make_loop

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, plan = build(method, model_dir, device, args)
    weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    vocab = model.config.vocab_size
    data = [Tokenized(ids, mask) for ids, mask in examples(4000, vocab, seed=1, max_len=args.row_len)]
    spec = TrainSpec(
        tokens_per_step=args.tokens_per_step,
        steps=args.warmup + args.steps,
        lr=1e-4,
        gradient_checkpointing=args.checkpointing,
        log_every=1000,
    )
    loop = make_loop(model, data, spec, device, plan, seed=0, row_len=args.row_len)
    losses, tokens = [], 0
    for _ in range(args.warmup):
        losses.append(float(loop.step()[0]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss, n, _count = loop.step()
        tokens += n
        losses.append(float(loss))  # a sync per step: the timed window ends when the work does
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "device": str(device),
        "attention": plan,
        "optimizer": type(loop.optimizer).__name__,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "weights_gib": round(weights / GIB, 3) if weights is not None else None,
        "peak_gib": round(peak_bytes(device) / GIB, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "timed_tokens": tokens,
        "seconds": round(seconds, 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }


def child_args(args, method: str, model_dir: Path) -> list[str]:
    out = [sys.executable, __file__, "--only", method, "--model-dir", str(model_dir), "--device", args.device]
    for key in ("arch", "tokens_per_step", "steps", "warmup", "row_len", "r", "qlora_optimizer"):
        out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return out + (["--checkpointing"] if args.checkpointing else ["--no-checkpointing"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--arch", default="llama-3.1-8b", help="Architecture from bench/workload.py (tiny: smoke check)."
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens-per-step", type=int, default=16384)
    p.add_argument("--row-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=8, help="Timed steps.")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--qlora-optimizer", default="adamw", choices=["adamw", "paged_adamw_8bit"])
    p.add_argument(
        "--checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Activation checkpointing for both methods (8B at 16k tokens/step needs it for bf16 LoRA).",
    )
    p.add_argument("--methods", nargs="+", default=["qlora", "lora"])
    p.add_argument("--model-dir", type=Path, help="Reuse a written random model (default: write one).")
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:  # a child: one method, one JSON line
        print(json.dumps(run_one(args.only, args.model_dir, args)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="qlora-bench-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            started = time.perf_counter()
            model_dir = write_random_model(args.arch, Path(tmp) / args.arch, torch.device(args.device))
            print(f"random {args.arch} written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        results = []
        for method in args.methods:
            r = subprocess.run(child_args(args, method, model_dir), capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{method} failed (exit {r.returncode})")
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    if len(results) == 2:
        a, b = results
        print(
            json.dumps(
                {
                    "peak_ratio": round(a["peak_gib"] / b["peak_gib"], 3),
                    "tokens_per_s_ratio": round(a["tokens_per_s"] / b["tokens_per_s"], 3),
                    "compared": [a["method"], b["method"]],
                    "tokens_per_step": args.tokens_per_step,
                }
            )
        )


if __name__ == "__main__":
    main()
