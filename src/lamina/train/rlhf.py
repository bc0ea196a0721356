"""RLHF with PPO: rollouts, rewards, KL penalty, GAE, several epochs of clipped updates.

Per iteration: sample `rollouts` prompts, generate replies with the KV cache (sampling
settings from the recipe), score them (a reward-model run or a `module:function`), compute
the log-probs of the policy, of the reference (the starting policy: adapter switched off,
or a frozen copy for full fine-tuning) and the value head's estimates; rewards are the score
on the last token minus β·(log π − log π_ref) on every token, β from an adaptive controller;
advantages by GAE; then `epochs` passes of clipped policy and value updates over shuffled
mini-batches. The output is a normal run directory (the method's artifact plus
`value_head/`), so a PPO policy loads, merges, evaluates and registers like any other run.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from lamina import methods, rundir
from lamina.data.formats import Example, Preference
from lamina.errors import LaminaError
from lamina.fsio import append_line, atomic_dir, write_json, write_text
from lamina.models.generate import encode_prompts
from lamina.models.loading import hash_model_files, load_hf_model, load_tokenizer, pick_device
from lamina.recipe import PpoSpec, Recipe
from lamina.train.objectives import ppo
from lamina.train.objectives.sft import model_parts
from lamina.train.provenance import code_version, library_versions
from lamina.train.seeding import seed_everything
from lamina.train.tiny_base import resolve_base

RewardFn = Callable[[list[list[dict]], list[str]], list[float]]


def load_reward_fn(ref: str, where: str = "ppo.reward") -> RewardFn:
    """`package.module:function` -> the function (checked before anything is written)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise LaminaError(f"expected `module:function`, got {ref!r}", where)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise LaminaError(f"cannot load {ref!r}: {e}", where) from None
    if not callable(fn):
        raise LaminaError(f"{ref!r} is not callable", where)
    return fn


def reward_source(spec: PpoSpec) -> tuple[RewardFn, dict]:
    if bool(spec.reward) == bool(spec.reward_model):
        raise LaminaError(
            "name exactly one of `ppo.reward` (module:function) or `ppo.reward_model` (a run)", "ppo"
        )
    if spec.reward:
        return load_reward_fn(spec.reward), {"function": spec.reward}
    from lamina.train.objectives.reward import load_reward_model

    rm = load_reward_model(spec.reward_model)
    return rm.score, {"reward_model": str(Path(spec.reward_model).resolve())}


def prompts_of(records: list) -> list[list[dict]]:
    out = []
    for r in records:
        if isinstance(r, Preference):
            out.append(r.prompt)
        elif isinstance(r, Example):
            out.append(r.messages[:-1])
    return [p for p in out if p]


@dataclass
class Rollout:
    prompts: list[list[dict]]
    texts: list[str]
    ids: torch.Tensor  # [B, P+T] prompt (left-padded) then response (right-padded)
    attention: torch.Tensor  # [B, P+T]
    mask: torch.Tensor  # [B, T] 1 on response tokens up to and including the end token
    prompt_len: int


@torch.no_grad()
def rollout(model, tokenizer, prompts: list[list[dict]], spec: PpoSpec) -> Rollout:
    """Sample replies with the KV cache; mask everything after the first end token."""
    device = next(model.parameters()).device
    enc = encode_prompts(tokenizer, prompts, device)
    was_training = model.training
    model.eval()
    s = spec.sampling
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.train(was_training)
    p = enc["input_ids"].shape[1]
    response = out[:, p:]
    is_end = (response == tokenizer.eos_token_id).int()
    # A token is real while no end token came strictly before it.
    ended_before = torch.cumsum(is_end, 1) - is_end
    mask = (ended_before == 0).float()
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    ids = torch.cat([enc["input_ids"], response], 1)
    attention = torch.cat([enc["attention_mask"], mask.long()], 1)
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Rollout(prompts, [t.strip() for t in texts], ids.clone(), attention.clone(), mask.clone(), p)


def forward(
    model, value_head, r: Rollout, rows=slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-probs of the response tokens, values, logits) — all [B, T(, V)]."""
    decoder, lm_head = model_parts(model)
    ids, attention = r.ids[rows], r.attention[rows]
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    hidden = decoder(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False)
    hidden = hidden.last_hidden_state[:, r.prompt_len - 1 : -1]
    logits = lm_head(hidden).float()
    targets = ids[:, r.prompt_len :]
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    return logp, values, logits


@dataclass
class Policy:
    model: torch.nn.Module
    value_head: torch.nn.Linear
    frozen: torch.nn.Module | None  # the reference for full fine-tuning
    dist: object | None = None  # lamina.train.distributed.Dist under torchrun (DDP over model + value head)

    def train_forward(self, r: Rollout, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` with gradients, through DDP when there is one (it all-reduces them)."""
        if self.dist is None:
            return forward(self.model, self.value_head, r, rows)
        return self.dist.forward(lambda m, r, rows: forward(m["model"], m["value_head"], r, rows), r, rows)

    def reference_logp(self, r: Rollout) -> torch.Tensor:
        with torch.no_grad():
            if self.frozen is not None:
                return forward(self.frozen, None, r)[0]
            with self.model.disable_adapter():
                return forward(self.model, None, r)[0]


def build_policy(recipe: Recipe, base_dir: Path, device) -> Policy:
    model = load_hf_model(base_dir, device, torch.float32, recipe.model.allow_pickle, "sdpa")
    model = methods.get(recipe.method.name).apply(model, recipe.method)
    frozen = None if hasattr(model, "disable_adapter") else copy.deepcopy(model).eval().requires_grad_(False)
    hidden = model_parts(model)[0].config.hidden_size
    head = torch.nn.Linear(hidden, 1).to(device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return Policy(model, head, frozen)


def make_optimizer(policy: Policy, spec: PpoSpec) -> torch.optim.Optimizer:
    params = [p for p in policy.model.parameters() if p.requires_grad]
    if not params:
        raise LaminaError("the method left no trainable parameters", "method")
    return torch.optim.AdamW(
        [
            {"params": params, "lr": spec.lr},
            {"params": list(policy.value_head.parameters()), "lr": spec.value_lr or spec.lr * 10},
        ],
        weight_decay=0.0,
    )


@dataclass
class Batch:
    """A scored rollout with everything the optimisation epochs need."""

    r: Rollout
    scores: torch.Tensor
    old_logp: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor  # per-sequence KL estimate (sum of log-ratios)


def score_rollout(policy: Policy, r: Rollout, reward_fn: RewardFn, spec: PpoSpec, kl_coef: float) -> Batch:
    scores = torch.tensor([float(x) for x in reward_fn(r.prompts, r.texts)], device=r.ids.device)
    if scores.shape[0] != r.ids.shape[0]:
        raise LaminaError(
            f"the reward returned {scores.shape[0]} scores for {r.ids.shape[0]} replies", "ppo.reward"
        )
    with torch.no_grad():
        old_logp, old_values, _ = forward(policy.model, policy.value_head, r)
        ref_logp = policy.reference_logp(r)
        rewards, kl = ppo.kl_penalised_rewards(scores, old_logp, ref_logp, r.mask, kl_coef)
        advantages, returns = ppo.gae(rewards, old_values * r.mask, r.mask, spec.gamma, spec.lam)
        if spec.whiten_advantages:
            advantages = ppo.whiten(advantages, r.mask, sum_ranks=policy.dist.sum if policy.dist else None)
    return Batch(r, scores, old_logp, old_values * r.mask, advantages, returns, kl.sum(1))


def optimise(policy: Policy, optimizer, b: Batch, spec: PpoSpec, gen: torch.Generator) -> dict:
    """`epochs` passes over shuffled mini-batches; returns averaged metrics (one host sync)."""
    n = b.r.ids.shape[0]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums = torch.zeros(6, device=b.r.ids.device)
    steps = 0
    for _ in range(spec.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, spec.mini_batch):
            rows = torch.tensor(order[start : start + spec.mini_batch], device=b.r.ids.device)
            mask = b.r.mask[rows]
            logp, values, logits = policy.train_forward(b.r, rows)
            pg, clipfrac = ppo.policy_loss(logp, b.old_logp[rows], b.advantages[rows], mask, spec.clip)
            vl, vclip = ppo.value_loss(values, b.old_values[rows], b.returns[rows], mask, spec.value_clip)
            (pg + spec.value_coef * vl).backward()
            if spec.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                ent = ppo.entropy(logits, mask)
                approx_kl = ppo.masked_mean(b.old_logp[rows] - logp, mask)
                sums += torch.stack([pg, vl, clipfrac, vclip, ent, approx_kl]).detach()
            steps += 1
    avg = (sums / max(steps, 1)).tolist()
    keys = ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "entropy", "approx_kl")
    return {k: round(v, 6) for k, v in zip(keys, avg, strict=True)}


def iteration_record(i: int, b: Batch, opt_metrics: dict, kl_coef: float, policy: Policy) -> dict:
    with torch.no_grad():
        _, values, _ = forward(policy.model, policy.value_head, b.r)
    return {
        "iteration": i,
        "reward": round(float(b.scores.mean()), 6),
        "kl": round(float(b.kl.mean()), 6),
        "kl_coef": round(kl_coef, 6),
        "response_tokens": round(float(b.r.mask.sum(1).mean()), 2),
        "tokens": int(b.r.attention.sum()),
        "explained_variance": round(ppo.explained_variance(values * b.r.mask, b.returns, b.r.mask), 6),
        **opt_metrics,
    }


@torch.no_grad()
def evaluate(
    policy: Policy, tokenizer, prompts: list[list[dict]], reward_fn: RewardFn, spec: PpoSpec, seed: int
) -> dict:
    """Mean reward and KL from the reference of sampled replies to fixed prompts."""
    torch.manual_seed(seed)
    r = rollout(policy.model, tokenizer, prompts, spec)
    scores = [float(x) for x in reward_fn(r.prompts, r.texts)]
    logp = forward(policy.model, None, r)[0]
    kl = ((logp - policy.reference_logp(r)) * r.mask).sum(1)
    return {
        "reward": round(sum(scores) / len(scores), 4),
        "kl": round(float(kl.mean()), 4),
        "samples": r.texts[:3],
    }


@dataclass
class PpoSetup:
    recipe: Recipe
    base_dir: Path
    tokenizer: object
    policy: Policy
    reward_fn: RewardFn
    reward_info: dict
    train_prompts: list[list[dict]]
    eval_prompts: list[list[dict]]
    data_info: dict
    device: torch.device


def setup_ppo(recipe: Recipe, d=None) -> PpoSetup:
    """Everything before the first rollout; raises LaminaError on bad input, writes nothing."""
    from lamina.data.dataset import load_training_data
    from lamina.train import distributed

    seed_everything(recipe.seed)
    rundir.check_output(recipe)
    from lamina.registry import tracking

    tracking.check_reachable()  # the run is logged there when it ends
    reward_fn, reward_info = reward_source(recipe.ppo)
    data = distributed.take_in(d, recipe, load_training_data)
    train_prompts = prompts_of(data.train)
    if not train_prompts:
        raise LaminaError("no prompts in the training data", recipe.data.train or "data.dataset")
    eval_prompts = prompts_of(data.eval)[: recipe.ppo.rollouts] or train_prompts[: recipe.ppo.rollouts]
    base_dir = resolve_base(recipe.model.base, recipe.model.revision)
    device = d.device if d else pick_device()
    tokenizer = load_tokenizer(base_dir)
    policy = build_policy(recipe, base_dir, device)
    if d:
        policy.dist = d.replicate_policy(policy.model, policy.value_head)
    return PpoSetup(
        recipe,
        base_dir,
        tokenizer,
        policy,
        reward_fn,
        reward_info,
        train_prompts,
        eval_prompts,
        {**data.info, "prompts": len(train_prompts), "eval_prompts": len(eval_prompts)},
        device,
    )


def ppo_run_info(s: PpoSetup, run_dir: Path) -> dict:
    from lamina import workspace

    return {
        "id": run_dir.name,
        "name": s.recipe.name,
        "status": "running",
        "user": workspace.user(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": s.recipe.seed,
        "objective": "ppo",
        "method": s.recipe.method.model_dump(mode="json"),
        "base": {
            "ref": s.recipe.model.base,
            "path": str(s.base_dir),
            "allow_pickle": s.recipe.model.allow_pickle,
            **hash_model_files(s.base_dir),
        },
        "data": s.data_info,
        "reward": s.reward_info,
        "device": str(s.device),
        "code": code_version(),
        "versions": library_versions(),
    }


def ppo_loop(s: PpoSetup, run_dir: Path, progress: bool) -> dict:
    spec = s.recipe.ppo
    optimizer = make_optimizer(s.policy, spec)
    kl_ctl = ppo.KLController(
        spec.init_kl_coef, spec.target_kl if spec.adaptive_kl else None, spec.kl_horizon
    )
    d = s.policy.dist  # under torchrun each rank samples its share of the rollouts
    rank, world = (d.rank, d.world) if d else (0, 1)
    rng, gen = random.Random(s.recipe.seed + rank), torch.Generator().manual_seed(s.recipe.seed)
    if d:
        torch.manual_seed(s.recipe.seed + rank)
        spec = spec.model_copy(update={"rollouts": max(1, spec.rollouts // world),
                                       "mini_batch": max(1, spec.mini_batch // world)})
    deadline = time.perf_counter() + spec.max_seconds if spec.max_seconds else None
    last: dict = {}
    with ppo_bar(f"{s.recipe.name} (ppo)", spec.iterations, progress and rank == 0) as bar:
        for i in range(1, spec.iterations + 1):
            started = time.perf_counter()
            prompts = [rng.choice(s.train_prompts) for _ in range(spec.rollouts)]
            r = rollout(s.policy.model, s.tokenizer, prompts, spec)
            b = score_rollout(s.policy, r, s.reward_fn, spec, kl_ctl.value)
            opt = optimise(s.policy, optimizer, b, spec, gen)
            last = iteration_record(i, b, opt, kl_ctl.value, s.policy)
            if d:  # every rank's record is the mean over ranks, so the KL controller moves alike
                last = d.mean_record(last)
            kl_ctl.update(last["kl"], spec.rollouts * world)
            last["seconds"] = round(time.perf_counter() - started, 3)
            if rank == 0:
                append_line(run_dir / rundir.METRICS, json.dumps(last))
            bar(i, last)
            if deadline is not None and time.perf_counter() >= deadline:
                break
    return last


@contextlib.contextmanager
def ppo_bar(title: str, total: int, enabled: bool):
    """A rich progress bar showing the latest reward and KL; yields update(iteration, record)."""
    if not enabled:
        yield lambda i, record: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lamina.console import console

    columns = [
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reward {task.fields[reward]}"),
        TextColumn("KL {task.fields[kl]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(title, total=total, reward="-", kl="-")
        yield lambda i, record: bar.update(
            task, completed=i, reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.2f}"
        )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / rundir.METRICS).read_text().splitlines() if x.strip()]


def save_ppo_outputs(s: PpoSetup, run_dir: Path) -> None:
    method = methods.get(s.recipe.method.name)
    with atomic_dir(run_dir / method.ARTIFACT, replace=True) as tmp:
        method.save(s.policy.model, tmp)
    with atomic_dir(run_dir / "tokenizer", replace=True) as tmp:
        s.tokenizer.save_pretrained(tmp)
    with atomic_dir(run_dir / "value_head", replace=True) as tmp:
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in s.policy.value_head.state_dict().items()
        }
        save_file(state, str(tmp / "head.safetensors"))


def train_ppo(
    recipe: Recipe, progress: bool = True, run_dir: Path | None = None, lineage: dict | None = None
) -> Path:
    """PPO from a recipe (`ppo:` settings; data gives the prompts); returns the run directory."""
    from lamina.train import distributed

    d = distributed.current(recipe.distributed)  # None unless started by torchrun
    if d and recipe.distributed.strategy == "fsdp":
        raise LaminaError("the PPO stage runs on DDP (its generation needs whole weights); use ddp or auto",
                          "distributed.strategy")
    s = setup_ppo(recipe, d)
    main = d is None or d.main  # only rank 0 writes the run directory
    run_dir = Path(run_dir) if run_dir else (rundir.new_run_dir(recipe) if main else None)
    run_dir = Path(d.broadcast(str(run_dir))) if d else run_dir
    info = {**ppo_run_info(s, run_dir), **(lineage or {})} if main else {}
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / rundir.RECIPE, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        write_json(run_dir / rundir.RUN_JSON, info)
    try:
        # The evaluations use no collective: rank 0 runs them alone.
        before = evaluate(s.policy, s.tokenizer, s.eval_prompts, s.reward_fn, recipe.ppo, recipe.seed) if main else {}
        last = ppo_loop(s, run_dir, progress)
        after = evaluate(s.policy, s.tokenizer, s.eval_prompts, s.reward_fn, recipe.ppo, recipe.seed) if main else {}
    except BaseException as e:
        info.update(
            status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e)[:500]
        )
        if main:
            write_json(run_dir / rundir.RUN_JSON, info)
        raise
    if not main:
        d.barrier()  # wait for rank 0's outputs (a next stage reads them)
        return run_dir
    save_ppo_outputs(s, run_dir)
    info.update(
        status="completed",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        iterations=last.get("iteration", 0),
        steps=last.get("iteration", 0),
        tokens=sum(m["tokens"] for m in _metrics(run_dir)),
        train_seconds=round(sum(m["seconds"] for m in _metrics(run_dir)), 3),
        final_loss=last.get("policy_loss"),
        final=last,
        eval={"before": before, "after": after},
    )
    write_json(run_dir / rundir.RUN_JSON, info)
    if d:
        d.barrier()
    return run_dir
