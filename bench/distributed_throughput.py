"""Scaling out: Lamina's loop under torchrun (DDP or FSDP2) at several world sizes, against the
plain one-process loop and against TRL with accelerate's FSDP2 on the same workload.

Weak scaling: every rank gets the per-GPU token budget `--tokens-per-step`, so a step of N
ranks trains N times the tokens of a one-GPU step. Reported per run: tokens/s over all ranks,
peak GPU memory of the busiest rank, and scaling efficiency = tokens/s(N) / (N x tokens/s(1)),
where the one-GPU figure is the same tool's run at world size 1. `plain` is the loop without
torchrun; `fsdp` at world size 1 against it is the cost of the wrapping itself.

The parent process starts one torchrun job per (tool, world size) — this same file with
`--worker` — and collects one JSON line from rank 0 of each.

    # one H200: FSDP2 at world size 1 against the plain loop (goal: <= 5 % slower)
    python bench/distributed_throughput.py --model llama-3.1-8b --method lora --nprocs plain,1 \
        --strategy fsdp --tokens-per-step 8192 --steps 10
    # several GPUs: scaling and TRL + accelerate FSDP2 side by side
    python bench/distributed_throughput.py --model llama-3.1-8b --method full --nprocs 1,2,8 \
        --strategy fsdp --tools lamina,trl --lamina-checkpointing
    python bench/distributed_throughput.py --smoke        # CPU, gloo, tiny model, 2 ranks
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import (  # noqa: E402
    lamina_arguments,
    new_model,
    peak_gib,
    reset_memory,
    run_trl,
    summarise,
    sync,
    versions,
)
from workload import build_config, examples, matmul_params  # noqa: E402

# The decoder layer class TRL/accelerate wrap per FSDP2 unit, per bench model.
LAYER_CLASS = {"tiny": "LlamaDecoderLayer", "qwen2.5-0.5b": "Qwen2DecoderLayer", "llama-3.1-8b": "LlamaDecoderLayer"}


def lamina_worker(args, data, device) -> dict:
    """Lamina's loop wrapped by lamina.train.distributed (or plain, outside torchrun)."""
    from lamina import methods
    from lamina.data.chat import Tokenized
    from lamina.models import kernels
    from lamina.models.attention import attention_plan, register
    from lamina.recipe import DistributedSpec, FullSpec, LoraSpec, TrainSpec
    from lamina.train import distributed
    from lamina.train.build_loop import make_loop

    d = distributed.current(DistributedSpec(strategy=args.strategy))
    world = d.world if d else 1
    device = d.device if d else device
    plan, attn = attention_plan(device)
    if attn != "sdpa":
        register()
    reset_memory(device)
    model = new_model(args, device, attn)
    n = matmul_params(model)
    fused = kernels.apply(model, args.lamina_kernels)
    model = methods.get(args.method).apply(model, LoraSpec() if args.method == "lora" else FullSpec())
    train = TrainSpec(tokens_per_step=args.tokens_per_step * world, steps=args.warmup + args.steps, lr=args.lr,
                      log_every=10**9, **({"micro_tokens": args.micro_tokens} if args.micro_tokens else {}),
                      **({"gradient_checkpointing": True} if args.lamina_checkpointing else {}))
    if d:
        d.wrap(model, args.method, distributed.precision(train, device))
    tokenized = [Tokenized(ids, [bool(m) for m in mask]) for ids, mask in data]
    loop = make_loop(model, tokenized, train, device, plan, seed=0, row_len=args.max_len)
    loop.dist = d
    loop.total_steps = args.warmup
    loop.run()
    first = float(loop.state.history[-1]["loss"])
    _barrier(d, device)
    t0, tokens0 = time.perf_counter(), loop.state.tokens
    loop.total_steps = args.warmup + args.steps
    loop.run()
    _barrier(d, device)
    seconds = time.perf_counter() - t0
    result = summarise("lamina", loop.state.tokens - tokens0, seconds, n, args, device, first,
                       float(loop.state.history[-1]["loss"]))
    result["peak_gib"] = _max_over_ranks(peak_gib(device), d)
    result["settings"] = {"world": world, "strategy": d.strategy if d else "plain", "attention": plan,
                          "fused_kernels": fused, "micro_tokens": loop.micro_tokens,
                          "gradient_checkpointing": train.gradient_checkpointing}
    return result


def trl_worker(args, data, device) -> dict:
    """TRL's SFTTrainer with accelerate's FSDP2 (transformers' `fsdp` arguments) on the same data."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if device.type == "cuda" else device
    variant = {"use_liger_kernel": False, "gradient_checkpointing": args.lamina_checkpointing}
    if args.strategy != "ddp":
        variant.update(fsdp="full_shard auto_wrap", fsdp_config={
            "fsdp_version": 2, "reshard_after_forward": True,
            "transformer_layer_cls_to_wrap": [LAYER_CLASS[args.model]]})
    result = run_trl(args, data, device, variant)
    if dist.is_initialized():  # run_trl counted this rank's tokens
        t = torch.tensor([float(result["tokens"])], device=device)
        dist.all_reduce(t)
        result["tokens"] = int(t.item())
        result["tokens_per_s"] = round(result["tokens"] / result["seconds"], 1)
        result["peak_gib"] = _max_over_ranks(result["peak_gib"], True)
    result["settings"] = {"world": world, "strategy": "fsdp2" if "fsdp" in variant else "ddp",
                          "gradient_checkpointing": variant["gradient_checkpointing"]}
    return result


def _barrier(d, device) -> None:
    sync(device)
    if d:
        d.barrier()


def _max_over_ranks(value, d):
    import torch.distributed as dist

    if value is None or not d or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return round(float(t.item()), 2)


def worker(args) -> None:
    device = torch.device(args.device)
    data = examples(args.examples, build_config(args.model).vocab_size, seed=0, max_len=args.max_len)
    result = (lamina_worker if args.tool == "lamina" else trl_worker)(args, data, device)
    if int(os.environ.get("RANK", 0)) == 0:
        with open(args.result, "a") as f:
            f.write(json.dumps(result) + "\n")


def launch(args, tool: str, nproc: str, result: Path) -> dict:
    """One job: torchrun with `nproc` ranks, or a plain process for `plain`."""
    forwarded = [a for a in sys.argv[1:] if a != "--smoke"]
    tail = [__file__, "--worker", "--tool", tool, "--result", str(result), *forwarded, *smoke_args(args)]
    if nproc == "plain":
        cmd = [sys.executable, *tail]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", nproc, *tail]
    before = result.read_text().count("\n") if result.exists() else 0
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = result.read_text().splitlines() if result.exists() else []
    if proc.returncode != 0 or len(lines) == before:
        return {"tool": tool, "nproc": nproc, "error": proc.stderr[-1500:]}
    return {**json.loads(lines[-1]), "nproc": nproc}


def smoke_args(args) -> list[str]:
    if not args.smoke:
        return []
    return ["--model", "tiny", "--device", "cpu", "--tokens-per-step", "2048", "--max-len", "256",
            "--steps", "2", "--warmup", "1", "--examples", "64"]


def efficiency(runs: list[dict]) -> None:
    """tokens/s(N) / (N x tokens/s(1)) for each tool, against its own world-size-1 run."""
    for r in runs:
        one = next((o for o in runs if o["tool"] == r["tool"] and o.get("nproc") == "1" and "error" not in o), None)
        if "error" in r or one is None or r["nproc"] == "plain":
            continue
        r["scaling_efficiency"] = round(r["tokens_per_s"] / (int(r["nproc"]) * one["tokens_per_s"]), 3)


def report(results: dict) -> None:
    print(f"\n{results['model']} {results['method']} on {results['gpu'] or results['device']}")
    print(f"{'tool':7} {'ranks':>5} {'strategy':>8} {'tokens/s':>10} {'peak GiB':>9} {'efficiency':>10}  loss")
    for r in results["runs"]:
        if "error" in r:
            print(f"{r['tool']:7} {r['nproc']:>5}  failed: {r['error'].strip().splitlines()[-1][:120]}")
            continue
        print(f"{r['tool']:7} {r['nproc']:>5} {r['settings']['strategy']:>8} {r['tokens_per_s']:>10,.0f} "
              f"{str(r['peak_gib']):>9} {str(r.get('scaling_efficiency', '-')):>10}  "
              f"{r['loss_start']:.3f}->{r['loss_end']:.3f}")
    plain = next((r for r in results["runs"] if r["nproc"] == "plain" and "error" not in r), None)
    one = next((r for r in results["runs"] if r["tool"] == "lamina" and r["nproc"] == "1" and "error" not in r), None)
    if plain and one:
        cost = 100 * (1 - one["tokens_per_s"] / plain["tokens_per_s"])
        print(f"world size 1 ({one['settings']['strategy']}) against the plain loop: "
              f"{abs(cost):.1f} % {'slower' if cost > 0 else 'faster'} (goal: at most 5 % slower)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    lamina_arguments(p)
    p.add_argument("--strategy", default="fsdp", choices=["auto", "ddp", "fsdp"])
    p.add_argument("--nprocs", default="plain,1,2", help="World sizes to run, comma-separated; `plain` = no torchrun.")
    p.add_argument("--tools", default="lamina", help="lamina and/or trl (TRL + accelerate FSDP2).")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--workdir", default="/tmp/lamina-bench")
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, gloo, the tiny config, a few steps.")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tool", default="lamina", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args = p.parse_args([*sys.argv[1:], *smoke_args(args)])
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result_file = Path(args.workdir) / f"distributed-{os.getpid()}.jsonl"
    results = {"model": args.model, "method": args.method, "device": args.device,
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
               "versions": versions(), "args": vars(args), "runs": []}
    for tool in args.tools.split(","):
        for nproc in args.nprocs.split(","):
            if tool == "trl" and nproc == "plain":
                continue
            results["runs"].append(launch(args, tool, nproc, result_file))
            print(json.dumps(results["runs"][-1]), flush=True)
    efficiency(results["runs"])
    report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
