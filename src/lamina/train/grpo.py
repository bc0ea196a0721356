"""Online RL with group baselines (GRPO, RLOO): sample, verify, train through the one loop.

Per iteration: draw `prompts` prompts, sample `group_size` replies to each with the KV cache
(batched, `max_completion_length` tokens, stop strings), score every reply with a verifier
(`module:function`) or a reward-model run, turn the rewards into group-relative advantages,
and run `epochs` passes of the clipped objective over the sampled sequences, packed like any
other training data (lamina.train.objectives.grpo). The reference for the KL term is the
starting policy: the same weights with the adapter switched off, or a frozen copy for full
fine-tuning; its log-probs and the sampling policy's (when more than one step reuses a
batch) are computed once per batch through the same packed forward.

The output is a normal run directory, so the policy merges, evaluates, registers and serves
like any other; its run.json records the reward source and the reward before and after.
metrics.jsonl has one record per iteration: mean reward and its std, `kl` (the mean per-token
k3 estimate), clip fraction, rollout and training seconds and tokens/s. The KL in run.json's
`eval` is per reply (summed over its tokens, log π − log π_ref), as PPO reports it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lamina import methods, rundir
from lamina.data.chat import Tokenized
from lamina.data.formats import Example, Preference, Unpaired
from lamina.errors import LaminaError
from lamina.fsio import append_line, atomic_dir, write_json, write_text
from lamina.models import kernels
from lamina.models.attention import attention_plan
from lamina.models.generate import sample_replies
from lamina.models.loading import hash_model_files, load_hf_model, load_tokenizer, pick_device
from lamina.recipe import SYNTHETIC_PROVENANCE, GrpoSpec, Recipe
from lamina.train.objectives.grpo import (
    GroupPolicyObjective,
    Sample,
    batch_logprobs,
    collate_samples,
    group_advantages,
    group_samples,
    leave_one_out_advantages,
)

RL_OBJECTIVES = ("grpo", "rloo")


# --- Rewards


@dataclass
class Rewarder:
    fn: object
    info: dict
    wants_references: bool

    def __call__(self, prompts: list, replies: list[str], references: list) -> torch.Tensor:
        out = self.fn(prompts, replies, references=references) if self.wants_references else self.fn(prompts, replies)
        scores = [float(x) for x in out]
        if len(scores) != len(replies):
            raise LaminaError(f"the reward returned {len(scores)} scores for {len(replies)} replies", "grpo.reward")
        return torch.tensor(scores)


def rewarder(spec: GrpoSpec) -> Rewarder:
    """The reward source the recipe names (exactly one), checked before anything is written."""
    if bool(spec.reward) == bool(spec.reward_model):
        raise LaminaError("name exactly one of `grpo.reward` (module:function) or `grpo.reward_model` (a run)",
                          "grpo")
    if spec.reward_model:
        from lamina.train.objectives.reward import load_reward_model

        rm = load_reward_model(spec.reward_model)
        return Rewarder(rm.score, {"reward_model": str(Path(spec.reward_model).resolve())}, False)
    from lamina.train.rlhf import load_reward_fn

    fn = load_reward_fn(spec.reward, "grpo.reward")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    wants = "references" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return Rewarder(fn, {"function": spec.reward}, wants)


def prompts_with_references(records: list) -> list[tuple[list[dict], str | None]]:
    """(prompt messages, reference answer or None) of each record: a chat record's last reply,
    a preference record's chosen reply, a desirable unpaired record's reply."""
    out = []
    for r in records:
        if isinstance(r, Example) and len(r.messages) > 1:
            out.append((r.messages[:-1], r.messages[-1]["content"]))
        elif isinstance(r, Preference):
            out.append((r.prompt, r.chosen))
        elif isinstance(r, Unpaired):
            out.append((r.prompt, r.completion if r.label else None))
    return out


def advantages(objective: str, rewards: torch.Tensor, spec: GrpoSpec) -> torch.Tensor:
    scale = spec.scale_rewards or ("group" if objective == "grpo" else "none")
    fn = group_advantages if objective == "grpo" else leave_one_out_advantages
    return fn(rewards, spec.group_size, scale)


# --- Setup


@dataclass
class GrpoSetup:
    recipe: Recipe
    objective: GroupPolicyObjective
    base_dir: Path
    tokenizer: object
    model: torch.nn.Module
    frozen: torch.nn.Module | None  # the reference of a full fine-tune (adapters switch off instead)
    rewarder: Rewarder
    train_prompts: list
    eval_prompts: list
    data_info: dict
    device: torch.device
    plan: str
    commit_data: Callable[[], None] = lambda: None  # writes the taken-in data (see train.setup)


def setup_grpo(recipe: Recipe) -> GrpoSetup:
    """Everything before the first rollout; raises LaminaError on bad input, writes nothing."""
    from lamina.data.dataset import load_training_data
    from lamina.registry import tracking
    from lamina.train.seeding import seed_everything

    name, spec = recipe.train.objective, recipe.grpo
    seed_everything(recipe.seed)
    rundir.check_output(recipe)
    tracking.check_reachable()  # the run is logged there when it ends
    reward = rewarder(spec)
    if recipe.method.name in ("prompt", "prefix"):
        raise LaminaError(f"{name} samples with the KV cache, which prompt and prefix tuning cannot steer", "method")
    data = load_training_data(recipe, defer_commit=True)
    try:
        return _setup_grpo(recipe, data, reward)
    except BaseException:
        data.discard()
        raise


def _setup_grpo(recipe: Recipe, data, reward) -> GrpoSetup:
    from lamina.train.tiny_base import resolve_base

    name, spec = recipe.train.objective, recipe.grpo
    train_prompts = prompts_with_references(data.train)
    if not train_prompts:
        raise LaminaError("no prompts in the training data", recipe.data.train or "data.dataset")
    eval_prompts = (prompts_with_references(data.eval) or train_prompts)[: spec.eval_prompts]
    base_dir = resolve_base(recipe.model.base, recipe.model.revision)
    device = pick_device()
    plan, attn = attention_plan(device)
    method = methods.get(recipe.method.name)
    dtype = torch.bfloat16 if device.type == "cuda" and recipe.method.name != "full" else torch.float32
    tokenizer = load_tokenizer(base_dir)
    load_base = getattr(method, "load_base", None)
    if load_base:
        model = load_base(base_dir, device, recipe.method, recipe.model.allow_pickle, attn)
    else:
        model = load_hf_model(base_dir, device, dtype, recipe.model.allow_pickle, attn)
    kernels.apply(model, recipe.train.fused_kernels)
    model = method.apply(model, recipe.method)
    frozen = None
    if spec.kl_coef > 0 and not hasattr(model, "disable_adapter"):
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
    objective = GroupPolicyObjective(name, spec.clip, spec.clip_high, spec.kl_coef, spec.loss_norm == "token")
    info = {**data.info, "prompts": len(train_prompts), "eval_prompts": len(eval_prompts)}
    return GrpoSetup(recipe, objective, base_dir, tokenizer, model, frozen, reward, train_prompts,
                     eval_prompts, info, device, plan, data.commit)


# --- One iteration


@contextlib.contextmanager
def reference(s: GrpoSetup):
    if s.frozen is not None:
        yield s.frozen
    else:
        with s.model.disable_adapter():
            yield s.model


@torch.no_grad()
def sequence_logprobs(s: GrpoSetup, model, samples: list[Sample], micro_tokens: int, autocast) -> list[torch.Tensor]:
    """Each sample's reply-token log-probs under `model`, through the packed training forward."""
    out: list[torch.Tensor | None] = [None] * len(samples)
    row_len = max(len(x.tok.input_ids) for x in samples)
    index = {id(x): i for i, x in enumerate(samples)}
    for group in group_samples(samples, micro_tokens):
        batch = collate_samples(group, row_len, True)
        with autocast():
            lp = batch_logprobs(model, batch.to(s.device), s.plan).float().cpu()  # one copy back per batch
        for k, x in enumerate(group):
            out[index[id(x)]] = lp[batch.seq == k]
    return out


def rollout(s: GrpoSetup, prompts: list, group_size: int) -> tuple[list, list[Sample], torch.Tensor, dict]:
    """Sample G replies per prompt and score them; returns (replies, samples, rewards, stats)."""
    spec = s.recipe.grpo
    messages = [p for p, _ in prompts for _ in range(group_size)]
    refs = [r for _, r in prompts for _ in range(group_size)]
    t = time.perf_counter()
    got = sample_replies(s.model, s.tokenizer, messages, spec.max_completion_length, spec.temperature,
                         spec.top_p, spec.stop, engine=spec.engine)
    gen_seconds = time.perf_counter() - t
    rewards = s.rewarder(messages, got.texts, refs)
    adv = advantages(s.objective.name, rewards, spec)
    samples = []
    for p_ids, r_ids, a in zip(got.prompt_ids, got.reply_ids, adv.tolist(), strict=True):
        r_ids = r_ids or [s.tokenizer.eos_token_id]  # an empty reply still gets its end token scored
        tok = Tokenized(p_ids + r_ids, [False] * len(p_ids) + [True] * len(r_ids))
        samples.append(Sample(tok, a, 1.0 if spec.loss_norm == "token" else 1.0 / len(r_ids)))
    reply_tokens = sum(len(r) for r in got.reply_ids)
    stats = {"rollout_seconds": round(gen_seconds, 3), "reply_tokens": reply_tokens,
             "rollout_tokens_per_s": round(reply_tokens / max(gen_seconds, 1e-9), 1),
             "truncated": round(sum(got.truncated) / len(got.truncated), 4)}
    return got.texts, samples, rewards, stats


class Minibatches:
    """The loop's sampler for one rollout batch: `epochs` shuffled passes in mini-batches."""

    def __init__(self, n: int, mini_batch: int, epochs: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.chunks = [
            order[i : i + mini_batch]
            for order in (torch.randperm(n, generator=g).tolist() for _ in range(epochs))
            for i in range(0, n, mini_batch)
        ]

    def next_step(self) -> list[int]:
        return self.chunks.pop(0)


def attach_logprobs(s: GrpoSetup, loop, samples: list[Sample], steps: int) -> None:
    """Reference log-probs for the KL term; the sampling policy's when steps reuse the batch."""
    if s.recipe.grpo.kl_coef > 0:
        with reference(s) as ref:
            for x, lp in zip(samples, sequence_logprobs(s, ref, samples, loop.micro_tokens, loop.autocast),
                             strict=True):
                x.ref_logp = lp
    if steps > 1:  # with one step the policy at the step is the sampling policy: ratio 1, no forward needed
        for x, lp in zip(samples, sequence_logprobs(s, s.model, samples, loop.micro_tokens, loop.autocast),
                         strict=True):
            x.old_logp = lp


def steps_per_iteration(spec: GrpoSpec) -> int:
    n = spec.prompts * spec.group_size
    return spec.epochs * math.ceil(n / (spec.mini_batch or n))


def optimise(s: GrpoSetup, loop, samples: list[Sample], seed: int) -> dict:
    """`epochs` passes over the rollout batch through the loop; returns averaged metrics."""
    spec = s.recipe.grpo
    n, steps = len(samples), steps_per_iteration(spec)
    loop.row_len = max(len(x.tok.input_ids) for x in samples)
    t = time.perf_counter()
    attach_logprobs(s, loop, samples, steps)
    loop.examples, loop.sampler = samples, Minibatches(n, spec.mini_batch or n, spec.epochs, seed)
    loop.model.train()
    loss, count, tokens = torch.zeros((), device=s.device), 0.0, 0
    for _ in range(steps):
        step_loss, step_tokens, step_count = loop.step()
        loop.state.step += 1
        loop.state.tokens += step_tokens
        loss += step_loss.detach() * step_count
        count += step_count
        tokens += step_tokens
    out = {"loss": round(float(loss / max(count, 1)), 6), "train_tokens": tokens, "steps": steps}
    for k, v in loop.metric_sums.items():
        out[k] = round(float(v / max(count, 1)), 6)
    loop.metric_sums.clear()
    seconds = time.perf_counter() - t
    out.update(train_seconds=round(seconds, 3), train_tokens_per_s=round(tokens / max(seconds, 1e-9), 1))
    return out


def build_loop(s: GrpoSetup, samples: list[Sample]):
    """The one loop, set up for rollout batches: a step is a mini-batch of sampled replies."""
    from lamina.train.build_loop import make_loop

    spec = s.recipe.grpo
    n = spec.prompts * spec.group_size
    longest = max(len(x.tok.input_ids) for x in samples)
    step_tokens = (spec.mini_batch or n) * (longest + spec.max_completion_length)
    train = s.recipe.train.model_copy(update={
        "tokens_per_step": max(step_tokens, s.recipe.train.tokens_per_step),
        "steps": spec.iterations * steps_per_iteration(spec),  # the learning-rate schedule's length
    })
    return make_loop(s.model, samples, train, s.device, s.plan, s.recipe.seed, longest, s.objective)


# --- Evaluation, the run


@torch.no_grad()
def evaluate(s: GrpoSetup, seed: int) -> dict:
    """Mean reward of sampled and of greedy replies to the held-out prompts; KL to the reference."""
    from lamina.models.generate import generate

    spec = s.recipe.grpo
    prompts = [p for p, _ in s.eval_prompts]
    refs = [r for _, r in s.eval_prompts]
    torch.manual_seed(seed)
    texts, samples, rewards, _ = rollout(s, s.eval_prompts, 1)
    greedy = generate(s.model, s.tokenizer, prompts, max_new_tokens=spec.max_completion_length)
    out = {"reward": round(float(rewards.mean()), 4),
           "greedy_reward": round(float(s.rewarder(prompts, greedy, refs).mean()), 4),
           "samples": texts[:3]}
    if s.frozen is not None or hasattr(s.model, "disable_adapter"):
        micro = s.recipe.train.micro_tokens or 8192
        pol = sequence_logprobs(s, s.model, samples, micro, contextlib.nullcontext)
        with reference(s) as ref:
            base = sequence_logprobs(s, ref, samples, micro, contextlib.nullcontext)
        out["kl"] = round(sum(float((a - b).sum()) for a, b in zip(pol, base, strict=True)) / len(pol), 4)
    return out


def grpo_loop(s: GrpoSetup, run_dir: Path, progress: bool) -> dict:
    from lamina.train.rlhf import ppo_bar

    spec = s.recipe.grpo
    rng = random.Random(s.recipe.seed)
    deadline = time.perf_counter() + spec.max_seconds if spec.max_seconds else None
    loop, last = None, {}
    with ppo_bar(f"{s.recipe.name} ({s.objective.name})", spec.iterations, progress) as bar:
        for i in range(1, spec.iterations + 1):
            started = time.perf_counter()
            prompts = [rng.choice(s.train_prompts) for _ in range(spec.prompts)]
            _, samples, rewards, stats = rollout(s, prompts, spec.group_size)
            loop = loop or build_loop(s, samples)
            opt = optimise(s, loop, samples, s.recipe.seed * 1_000_003 + i)
            last = {"step": i, "iteration": i, "reward": round(float(rewards.mean()), 6),
                    "reward_std": round(float(rewards.std()), 6), **stats, **opt,
                    "lr": loop.optimizer.param_groups[0]["lr"]}
            last.setdefault("kl", 0.0)
            last["seconds"] = round(time.perf_counter() - started, 3)
            append_line(run_dir / rundir.METRICS, json.dumps(last))
            bar(i, last)
            if deadline is not None and time.perf_counter() >= deadline:
                break
    return last


def run_info(s: GrpoSetup, run_dir: Path) -> dict:
    from lamina import workspace
    from lamina.train.provenance import code_version, library_versions

    return {
        "id": run_dir.name, "name": s.recipe.name, "status": "running", "user": workspace.user(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": s.recipe.seed, "objective": s.objective.name,
        "method": s.recipe.method.model_dump(mode="json"),
        "base": {"ref": s.recipe.model.base, "path": str(s.base_dir), "allow_pickle": s.recipe.model.allow_pickle,
                 **hash_model_files(s.base_dir)},
        "data": s.data_info, "reward": s.rewarder.info, "device": str(s.device), "attention": s.plan,
        "code": code_version(), "versions": library_versions(),
    }


def train_grpo(recipe: Recipe, progress: bool = True, run_dir: Path | None = None,
               lineage: dict | None = None) -> Path:
    """GRPO or RLOO (`train.objective`) from a recipe (`grpo:` settings; data gives the prompts)."""
    from lamina.registry.tracking import log_run

    s = setup_grpo(recipe)
    run_dir = Path(run_dir) if run_dir else rundir.new_run_dir(recipe)
    s.commit_data()  # the first write: setup checked everything
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / rundir.RECIPE, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    info = {**run_info(s, run_dir), **(lineage or {})}
    write_json(run_dir / rundir.RUN_JSON, info)
    try:
        before = evaluate(s, recipe.seed)
        last = grpo_loop(s, run_dir, progress)
        after = evaluate(s, recipe.seed)
    except BaseException as e:
        info.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e)[:500])
        write_json(run_dir / rundir.RUN_JSON, info)
        raise
    method = methods.get(recipe.method.name)
    with atomic_dir(run_dir / method.ARTIFACT, replace=True) as tmp:
        method.save(s.model, tmp)
    with atomic_dir(run_dir / rundir.TOKENIZER, replace=True) as tmp:
        s.tokenizer.save_pretrained(tmp)
    history = rundir.read_metrics(run_dir)
    info.update(status="completed", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), iterations=last.get("iteration", 0),
                steps=sum(m["steps"] for m in history), tokens=sum(m["train_tokens"] for m in history),
                train_seconds=round(sum(m["seconds"] for m in history), 3), final_loss=last.get("loss"),
                final=last, eval={"before": before, "after": after})
    write_json(run_dir / rundir.RUN_JSON, info)
    log_run(run_dir)
    return run_dir


# --- The demo's RL stage (`lamina demo --rl`)


def demo_grpo(base: Path, workspace_dir: Path, iterations: int = 24) -> dict:
    """GRPO on the tiny base itself with the ticket verifier (no SFT before it): the mean
    verifiable reward of sampled and of greedy replies to held-out tickets before and after."""
    from lamina.data.synthetic import task_splits, write_jsonl
    from lamina.fsio import read_json
    from lamina.recipe import parse_recipe

    started = time.time()
    train, held = task_splits(n_train=400, n_eval=32, seed=7)
    prompts, eval_prompts = Path(workspace_dir) / "grpo-prompts.jsonl", Path(workspace_dir) / "grpo-eval.jsonl"
    write_jsonl(prompts, train)
    write_jsonl(eval_prompts, held)
    recipe = parse_recipe({
        "name": "demo-grpo", "model": {"base": str(base)},
        "data": {"train": str(prompts), "eval": str(eval_prompts), "licence": "internal", "max_length": 256,
                 "provenance": SYNTHETIC_PROVENANCE},
        "method": {"name": "lora", "r": 16, "alpha": 32},
        "train": {"objective": "grpo", "lr": 3e-3, "schedule": "constant"},
        "grpo": {"reward": "lamina.train.verifiers:ticket_reward", "iterations": iterations, "prompts": 8,
                 "group_size": 8, "max_completion_length": 24, "eval_prompts": 32},
    }, "demo")
    run_dir = train_grpo(recipe, progress=True)
    ev = read_json(run_dir / rundir.RUN_JSON)["eval"]
    return {"run_dir": str(run_dir), "verifier": recipe.grpo.reward, "iterations": iterations,
            "held_out_prompts": len(held), "reward_before": ev["before"]["reward"],
            "reward_after": ev["after"]["reward"], "greedy_reward_before": ev["before"]["greedy_reward"],
            "greedy_reward_after": ev["after"]["greedy_reward"], "kl": ev["after"].get("kl"),
            "seconds": round(time.time() - started, 1)}
