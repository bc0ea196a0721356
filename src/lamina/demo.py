"""The embedded default: the whole pipeline on the tiny offline model and the bundled data.

data (planted PII) → intake → tiny base → SFT → evaluation + gate → DPO (or reward model →
PPO with --rlhf; with --rl, GRPO on the base against a verifier) → evaluation + gate → registry: register, promote, register, promote, roll
back. Each stage prints what it did and adds its figures to one dictionary, which
`lamina demo --json` prints at the end so scripts can check it.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import yaml
from rich.table import Table

from lamina import workspace
from lamina.console import console
from lamina.data.synthetic import task_splits, write_jsonl
from lamina.recipe import Recipe, parse_recipe


def demo_recipe(dataset_version: str, method: str = "lora") -> Recipe:
    data = yaml.safe_load(resources.files("lamina").joinpath("assets/demo.yaml").read_text())
    data["data"] = {k: v for k, v in data["data"].items() if k not in ("train", "eval", "licence", "provenance")}
    data["data"]["dataset"] = dataset_version
    if method != data["method"]["name"]:
        settings = dict(data.get("method_settings", {}).get(method, {}))
        data["method"] = {"name": method, **settings.pop("method", {})}
        data["name"] = f"demo-{method}"
        data["train"].update(settings)
    data.pop("method_settings", None)
    return parse_recipe(data, "assets/demo.yaml")


def held_out_em(model_ref, records: list[dict]) -> float:
    from lamina.methods.trained import load_model
    from lamina.models.generate import exact_match

    model, tokenizer = load_model(model_ref)
    score, _ = exact_match(model, tokenizer, records)
    return round(score, 4)


class StageClock:
    """Prints each stage's heading and records its wall and CPU seconds in figures["stages"]."""

    def __init__(self, figures: dict):
        self.stages = figures.setdefault("stages", {})
        self.current: str | None = None

    def stage(self, n: int, title: str, key: str) -> None:
        self.stop()
        console.rule(f"[bold]{n}. {title}")
        self.current, self.wall, self.cpu = key, time.perf_counter(), time.process_time()

    def stop(self) -> None:
        if self.current:
            self.stages[self.current] = {"seconds": round(time.perf_counter() - self.wall, 1),
                                         "cpu_seconds": round(time.process_time() - self.cpu, 1)}
        self.current = None


def run_demo(method: str = "lora", rlhf: bool = False, rl: bool = False) -> dict:
    started = time.time()
    figures: dict = {"method": method, "machine": machine()}
    home = workspace.subdir("demo")
    announce_pretraining()
    clock = StageClock(figures)

    clock.stage(1, "bundled data and intake", "intake")
    train_records, eval_records = task_splits()
    train_path, eval_path = home / "tickets-train.jsonl", home / "tickets-eval.jsonl"
    write_jsonl(train_path, train_records)
    write_jsonl(eval_path, eval_records)
    from lamina.data.intake import demo_intake

    intake = demo_intake(train_path, eval_path)
    figures["intake"] = {k: intake[k] for k in ("dataset", "version_id", "card", "counts", "planted", "pii_found")}
    figures["intake"]["pii_report"] = intake["pii_report"]
    show_pii(intake)

    clock.stage(2, "tiny base model", "base")
    from lamina.train.tiny_base import ensure_tiny_base

    t = time.time()
    base = ensure_tiny_base()
    figures["base"] = {"path": str(base), "seconds": round(time.time() - t, 1)}
    figures["base"]["exact_match"] = held_out_em(base, eval_records)
    console.print(f"base at {base}; held-out exact match {figures['base']['exact_match']:.2f}")

    clock.stage(3, f"supervised fine-tuning ({method})", "sft")
    from lamina.train.runner import train

    t = time.time()
    sft_run = train(demo_recipe(intake["version_id"], method))
    figures["sft"] = {"run_dir": str(sft_run), "seconds": round(time.time() - t, 1)}
    figures["sft"]["exact_match"] = held_out_em(sft_run, eval_records)
    console.print(f"fine-tuned held-out exact match {figures['sft']['exact_match']:.2f} (run {sft_run})")

    clock.stage(4, "evaluation and release gate", "gate")
    figures["eval"] = evaluate(sft_run, base)

    key = "rlhf" if rlhf else "rl" if rl else "dpo"
    title = "reward model → PPO" if rlhf else "GRPO on the base with a verifier" if rl else "preference optimisation (DPO)"
    clock.stage(5, title, key)
    from lamina import methods
    from lamina.train import stages

    second_run = None
    if not methods.get(method).MERGEABLE:
        # A later stage starts from the previous stage merged into its base.
        reason = f"skipped: {method} cannot be merged into its base, so no stage can build on it"
        figures[key] = {"skipped": reason}
        console.print(f"[yellow]{reason}[/]; the fine-tune is released alone")
    else:
        if rl:
            from lamina.train.grpo import demo_grpo

            second = demo_grpo(base, home)  # RL alone, from the base: does the verifier teach the task?
        else:
            second = stages.demo_rlhf(sft_run, home) if rlhf else stages.demo_dpo(sft_run, home)
        figures[key] = second
        show_second_stage(key, second)
        second_run = Path(second["ppo_run"] if rlhf else second["run_dir"])
        figures[f"{key}_eval"] = evaluate(second_run, base, eval_path)

    clock.stage(6, "registry: register, promote, roll back", "release")
    figures["release"] = release(sft_run, second_run)
    clock.stop()

    figures["seconds"] = round(time.time() - started, 1)
    show_summary(figures, key)
    return figures


def machine() -> dict:
    """The conditions every time figure depends on: threads torch uses, cores, load, bf16."""
    import os

    import torch

    from lamina.models.cpu import configure_threads, native_bf16

    cuda = torch.cuda.is_available()
    return {"device": "cuda" if cuda else "cpu", "torch_threads": configure_threads(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_bf16": native_bf16()}


def announce_pretraining() -> None:
    """On a first run, say how long the one-time pretraining of the tiny base will take."""
    from lamina.train.tiny_base import estimate_pretraining, is_cached

    if is_cached():
        return
    est = estimate_pretraining()
    console.print(f"First run: the tiny base is pretrained once, about {est['seconds']:.0f} s here "
                  f"({est['tokens']:,} tokens at a measured {est['tokens_per_s']:,.0f} tokens/s); "
                  "later runs load it from the workspace cache.")


def evaluate(run_dir: Path, base: Path, eval_file: Path | None = None) -> dict:
    from lamina.eval.harness import demo_eval

    result = demo_eval(run_dir, base, eval_file=eval_file)
    for check in result["checks"]:
        mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
        console.print(f"  {mark}  {check['expr']}  (value {check.get('value')}, threshold {check.get('threshold')})")
    verdict = "[green]PASSED[/]" if result["passed"] else "[red]FAILED[/]"
    console.print(f"gate {verdict}; report {result['report']}")
    # The tiny base knows nothing of safety, so the demo gates safety only against it: say so.
    warnings = result["warnings"]
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    return {"passed": result["passed"], "checks": result["checks"], "report": result["report"],
            "seconds": result["seconds"], "warnings": warnings}


def release(first_run: Path, second_run: Path | None) -> dict:
    from lamina.eval.verdict import recheck
    from lamina.registry import demo_release

    try:
        # The second stage was evaluated before the first was released: its relative gates
        # are re-checked against the new champion's stored report before it may replace it.
        result = demo_release(first_run, second_run, recheck=recheck)
    except Exception as e:  # a failed gate blocks registration: report it as the outcome it is
        from lamina.errors import LaminaError

        if not isinstance(e, LaminaError):
            raise
        console.print(f"[yellow]registration refused:[/] {e}")
        return {"refused": str(e)}
    console.print(result["history_text"])
    console.print(result["lineage_text"])
    return {"production": result["production"], "history": result["history"], "lineage": result["lineage_text"]}


def show_pii(intake: dict) -> None:
    table = Table(title=f"PII planted in the bundled data ({intake['planted']} spans) — detection by entity")
    for col in ("entity", "gold", "recall", "precision"):
        table.add_column(col, justify="left" if col == "entity" else "right")
    for entity, row in intake["pii_report"].items():
        table.add_row(entity, str(row["gold"]), _fmt(row["recall"]), _fmt(row["precision"]))
    console.print(table)
    console.print(f"dataset version {intake['version_id'][:16]}…; card {intake['card']}")


def show_second_stage(key: str, s: dict) -> None:
    if key == "dpo":
        console.print(f"preference accuracy on {s['held_out_pairs']} held-out pairs: "
                      f"{s['accuracy_before']:.2f} before DPO → {s['accuracy_after']:.2f} after")
    elif key == "rl":
        console.print(f"mean verifier reward of sampled replies to {s['held_out_prompts']} held-out tickets "
                      f"{s['reward_before']:.3f} before GRPO → {s['reward_after']:.3f} after (greedy "
                      f"{s['greedy_reward_before']:.3f} → {s['greedy_reward_after']:.3f}; KL {s['kl']:.3f})")
    else:
        console.print(f"mean reward {s['reward_before']:.3f} before PPO → {s['reward_after']:.3f} after "
                      f"(KL {s['kl']:.3f}); reward-model pair accuracy {s['rm_pair_accuracy']:.2f}")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def show_summary(figures: dict, key: str) -> None:
    table = Table(title="Lamina demo")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("PII recall (planted spans)", _fmt(figures["intake"]["pii_report"]["ALL"]["recall"]))
    table.add_row("base exact match (held-out)", f"{figures['base']['exact_match']:.2f}")
    table.add_row("fine-tuned exact match (held-out)", f"{figures['sft']['exact_match']:.2f}")
    table.add_row("SFT gate", "passed" if figures["eval"]["passed"] else "FAILED")
    if "skipped" in figures[key]:
        table.add_row(f"{key.upper()} stage", "skipped (method cannot be merged)")
    elif key == "dpo":
        d = figures["dpo"]
        table.add_row("preference accuracy before → after DPO", f"{d['accuracy_before']:.2f} → {d['accuracy_after']:.2f}")
    elif key == "rl":
        r = figures["rl"]
        table.add_row("verifier reward before → after GRPO", f"{r['reward_before']:.3f} → {r['reward_after']:.3f}")
    else:
        r = figures["rlhf"]
        table.add_row("mean reward before → after PPO", f"{r['reward_before']:.3f} → {r['reward_after']:.3f}")
    if f"{key}_eval" in figures:
        table.add_row(f"{key.upper()} gate", "passed" if figures[f"{key}_eval"]["passed"] else "FAILED")
        table.add_row("production alias after rollback", str(figures["release"].get("production", "—")))
    else:
        table.add_row("production alias", str(figures["release"].get("production", "—")))
    table.add_row("total seconds", f"{figures['seconds']:.0f}")
    console.print(table)
