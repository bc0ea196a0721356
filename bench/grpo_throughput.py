"""GRPO throughput, Lamina against TRL's GRPOTrainer, side by side in one process on one device.

Both tools train the same random-weight model config (LoRA r=16 on all linear layers, bf16 on
CUDA) on the same prompts (random token strings over a word-level vocabulary, 96-160 tokens),
sampling `--group` replies of exactly `--completion` tokens per prompt (a random-weight model
practically never samples its end token), scored by the same synthetic verifier (the share
of a reply's tokens with an even id), with the same objective settings: one optimiser step
per rollout batch, token-level loss, group-normalised advantages, KL to the adapter-free
reference with β = 0.04, clip 0.2. TRL runs without vLLM (the GPU image has none) and
each of the settings in --trl-variants; its fastest is reported.

Reported per tool, averaged over the timed iterations (after --warmup): rollout tokens/s
(reply tokens / generation seconds), training tokens/s (prompt + reply tokens of the batch /
seconds from the end of generation to the end of the optimiser step: scoring, reference and
policy forwards, backward, step), whole-iteration seconds and iterations/hour, peak memory.

    python bench/grpo_throughput.py --model qwen2.5-0.5b --prompts 16 --iterations 4
    python bench/grpo_throughput.py --model llama-3.1-8b --prompts 16 --iterations 3
    python bench/grpo_throughput.py --smoke        # tiny config on CPU: both tools, seconds
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
from sft_throughput import new_model, peak_gib, reset_memory, sync, versions  # noqa: E402
from workload import build_config  # noqa: E402

BETA, CLIP, LR = 0.04, 0.2, 1e-5


def chat_tokenizer(vocab: int):
    """A word-level tokenizer over the model's ids, with a chat template that joins the turns."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t1", eos_token="t2")
    out.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return out


def make_prompts(n: int, vocab: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    return [[{"role": "user", "content": " ".join(f"t{rng.randrange(3, min(vocab, 20000))}"
                                                   for _ in range(rng.randint(96, 160)))}] for _ in range(n)]


def even_share(prompts, completions, **kwargs) -> list[float]:
    """The synthetic verifier: share of a reply's tokens with an even id (both tools' shape)."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else c[-1]["content"]
        ids = [int(w[1:]) for w in text.split() if w[1:].isdigit()]
        out.append(sum(i % 2 == 0 for i in ids) / max(len(ids), 1))
    return out


def lamina_setup(args, device, prompts, variant: dict):
    from lamina import methods
    from lamina.models import kernels
    from lamina.models.attention import attention_plan, register
    from lamina.recipe import LoraSpec, parse_recipe
    from lamina.train.grpo import GrpoSetup, Rewarder
    from lamina.train.objectives.grpo import GroupPolicyObjective

    plan, attn = attention_plan(device)
    if attn != "sdpa":
        register()
    model = new_model(args, device, attn)
    fused = kernels.apply(model, "auto")
    model = methods.get("lora").apply(model, LoraSpec())
    recipe = parse_recipe({
        "name": "bench", "data": {"train": "unused.jsonl"},
        "train": {"objective": "grpo", "lr": LR, "schedule": "constant",
                  **({"micro_tokens": args.micro_tokens} if args.micro_tokens else {})},
        "grpo": {"reward": "grpo_throughput:even_share", "iterations": args.warmup + args.iterations,
                 "prompts": args.prompts, "group_size": args.group, "max_completion_length": args.completion,
                 "kl_coef": BETA, "clip": CLIP, "loss_norm": "token", "scale_rewards": "group", **variant},
    })
    objective = GroupPolicyObjective("grpo", CLIP, None, BETA, True)
    s = GrpoSetup(recipe, objective, Path("."), chat_tokenizer(build_config(args.model).vocab_size), model, None,
                  Rewarder(even_share, {"function": "even_share"}, False), [(p, None) for p in prompts], [], {},
                  device, plan)
    return s, fused


def run_lamina(args, device, prompts, variant: dict) -> dict:
    from lamina.train.grpo import build_loop, optimise, rollout

    reset_memory(device)
    s, fused = lamina_setup(args, device, prompts, variant)
    loop, rows = None, []
    for i in range(args.warmup + args.iterations):
        batch = [(p, None) for p in prompts[i * args.prompts : (i + 1) * args.prompts]]
        sync(device)
        t0 = time.perf_counter()
        _, samples, rewards, stats = rollout(s, batch, args.group)
        sync(device)
        t1 = time.perf_counter()
        loop = loop or build_loop(s, samples)
        opt = optimise(s, loop, samples, i)
        sync(device)
        t2 = time.perf_counter()
        tokens = sum(len(x.tok.input_ids) for x in samples)
        rows.append({"rollout_s": t1 - t0, "train_s": t2 - t1, "reply_tokens": stats["reply_tokens"],
                     "tokens": tokens, "reward": float(rewards.mean()), "loss": opt["loss"]})
    out = summarise("lamina", rows[args.warmup :], device)
    out["settings"] = {"attention": s.plan, "fused_kernels": fused, "micro_tokens": loop.micro_tokens,
                       "engine": s.recipe.grpo.engine}
    return out


def run_trl(args, device, prompts, variant: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    reset_memory(device)
    model = new_model(args, device, "sdpa")
    rows: list[dict] = []
    clock: dict = {}

    class Timed(GRPOTrainer):
        def _generate_single_turn(self, *a, **kw):
            sync(device)
            t = time.perf_counter()
            out = super()._generate_single_turn(*a, **kw)
            sync(device)
            clock["gen_end"] = time.perf_counter()
            clock["gen"] = clock.get("gen", 0.0) + clock["gen_end"] - t
            clock["reply_tokens"] = clock.get("reply_tokens", 0) + sum(len(c) for c in out[0])
            return out

    class Steps(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync(device)
            clock.update(start=time.perf_counter(), gen=0.0, reply_tokens=0)

        def on_step_end(self, a, state, control, **kw):
            sync(device)
            end = time.perf_counter()
            rows.append({"rollout_s": clock["gen"], "train_s": end - clock["start"] - clock["gen"],
                         "reply_tokens": clock["reply_tokens"], "tokens": clock.get("batch_tokens", 0)})

    micro = variant.pop("per_device_train_batch_size", args.prompts * args.group)
    accumulation = args.prompts * args.group // micro
    config = GRPOConfig(
        output_dir=str(Path(args.workdir) / "trl"), max_steps=args.warmup + args.iterations, learning_rate=LR,
        lr_scheduler_type="constant", per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_generations=args.group, max_completion_length=args.completion, temperature=1.0, beta=BETA,
        epsilon=CLIP, loss_type="dapo", scale_rewards="group", num_iterations=1, bf16=device.type == "cuda",
        use_cpu=device.type == "cpu", logging_steps=1, report_to=[], save_strategy="no",
        dataloader_num_workers=0, seed=0, **variant,
    )
    ds = Dataset.from_list([{"prompt": p} for p in prompts])
    trainer = Timed(model=model, reward_funcs=[even_share], args=config, train_dataset=ds,
                    processing_class=chat_tokenizer(build_config(args.model).vocab_size),
                    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
                    callbacks=[Steps()])
    prompt_tokens = {id(p): len(p[0]["content"].split()) for p in prompts}
    per_prompt = sum(prompt_tokens.values()) / len(prompts)
    trainer.train()
    for r in rows:  # prompt tokens of a batch: the mean prompt (TRL samples prompts itself)
        r["tokens"] = int(args.prompts * args.group * per_prompt + r["reply_tokens"])
    out = summarise("trl", rows[args.warmup :], device)
    out["settings"] = {"per_device_train_batch_size": micro, "gradient_accumulation_steps": accumulation, **variant}
    del trainer, model
    return out


def summarise(tool: str, rows: list[dict], device) -> dict:
    rollout = sum(r["rollout_s"] for r in rows)
    train = sum(r["train_s"] for r in rows)
    iteration = (rollout + train) / len(rows)
    return {
        "tool": tool, "iterations": len(rows),
        "rollout_tokens_per_s": round(sum(r["reply_tokens"] for r in rows) / rollout, 1),
        "train_tokens_per_s": round(sum(r["tokens"] for r in rows) / train, 1),
        "iteration_s": round(iteration, 3), "iterations_per_hour": round(3600 / iteration, 1),
        "rollout_s": round(rollout / len(rows), 3), "train_s": round(train / len(rows), 3),
        "peak_gib": peak_gib(device), "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-0.5b", choices=["tiny", "qwen2.5-0.5b", "llama-3.1-8b"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prompts", type=int, default=16, help="Prompts per iteration.")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--completion", type=int, default=256, help="Reply tokens (max_completion_length).")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--micro-tokens", type=int, default=None, help="Lamina micro-batch budget (default: its own).")
    p.add_argument("--tools", default="lamina,trl")
    p.add_argument("--lamina-variants", default=None, help="JSON list of `grpo:` settings to try for Lamina; "
                   'the fastest is reported (default: [{}, {"engine": "continuous"}]; --smoke: [{}]).')
    p.add_argument("--trl-variants", default=None, help="JSON list of extra GRPOConfig settings to try for TRL; "
                   "the fastest is reported (default: checkpointing off with the whole batch, on with 32 replies "
                   "per micro-batch, and continuous batching; --smoke: the first).")
    p.add_argument("--smoke", action="store_true", help="Tiny config on CPU, 2 prompts x 4 replies x 16 tokens.")
    p.add_argument("--workdir", default="/tmp/lamina-bench")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    if args.smoke:
        args.model, args.device, args.prompts, args.group, args.completion = "tiny", "cpu", 2, 4, 16
        args.iterations, args.warmup = 2, 1
    lamina_all = [{}, {"engine": "continuous"}]
    trl_all = [{"gradient_checkpointing": False},
               {"gradient_checkpointing": True, "per_device_train_batch_size": 32},
               {"use_transformers_continuous_batching": True}]
    args.lamina_variants = args.lamina_variants or json.dumps(lamina_all[:1] if args.smoke else lamina_all)
    args.trl_variants = args.trl_variants or json.dumps(trl_all[:1] if args.smoke else trl_all)
    args.method = "lora"  # sft_throughput.new_model reads it
    device = torch.device(args.device)
    prompts = make_prompts(args.prompts * (args.warmup + args.iterations), build_config(args.model).vocab_size)
    results = {"model": args.model, "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "versions": versions(), "args": vars(args), "runs": []}
    for tool in args.tools.split(","):
        run = run_lamina if tool == "lamina" else run_trl
        for variant in json.loads(args.lamina_variants if tool == "lamina" else args.trl_variants):
            try:
                results["runs"].append(run(args, device, prompts, dict(variant)))
            except Exception as e:  # one variant failing (memory, an engine) must not cost the others
                results["runs"].append({"tool": tool, "settings": variant, "error": f"{type(e).__name__}: {e}"[:300]})
            print(json.dumps({k: v for k, v in results["runs"][-1].items() if k != "rows"}), flush=True)
    report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def report(results: dict) -> None:
    ok = [r for r in results["runs"] if "error" not in r]
    lamina = min((r for r in ok if r["tool"] == "lamina"), key=lambda r: r["iteration_s"], default=None)
    trl = min((r for r in ok if r["tool"] == "trl"), key=lambda r: r["iteration_s"], default=None)
    a = results["args"]
    print(f"\n{results['model']} GRPO, {a['prompts']} prompts x {a['group']} replies x {a['completion']} tokens "
          f"on {results['gpu'] or results['device']}")
    print(f"{'tool':8} {'rollout tok/s':>14} {'train tok/s':>12} {'iter s':>8} {'iter/h':>8} {'peak GiB':>9}  settings")
    for r in ok:
        print(f"{r['tool']:8} {r['rollout_tokens_per_s']:>14,.0f} {r['train_tokens_per_s']:>12,.0f} "
              f"{r['iteration_s']:>8.2f} {r['iterations_per_hour']:>8.0f} {str(r['peak_gib']):>9}  {r['settings']}")
    if lamina and trl:
        print(f"ratio lamina/trl: iterations/hour x{trl['iteration_s'] / lamina['iteration_s']:.2f}, rollout x"
              f"{lamina['rollout_tokens_per_s'] / trl['rollout_tokens_per_s']:.2f}, training x"
              f"{lamina['train_tokens_per_s'] / trl['train_tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
