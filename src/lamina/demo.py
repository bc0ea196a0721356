"""The embedded default: the whole pipeline on the tiny offline model and the bundled data.

Each stage prints what it did and adds its figures to one dictionary, which `lamina demo
--json` prints at the end so scripts can check it.
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


def demo_recipe(train_path: Path, eval_path: Path, method: str = "lora") -> Recipe:
    text = resources.files("lamina").joinpath("assets/demo.yaml").read_text()
    data = yaml.safe_load(text)
    data["data"]["train"], data["data"]["eval"] = str(train_path), str(eval_path)
    if method != data["method"]["name"]:
        data["method"] = {"name": method}
        data["name"] = f"demo-{method}"
    return parse_recipe(data, "assets/demo.yaml")


def held_out_em(model_ref, records: list[dict]) -> float:
    from lamina.models.generate import exact_match
    from lamina.models.loading import load_model

    model, tokenizer = load_model(model_ref)
    score, _ = exact_match(model, tokenizer, records)
    return round(score, 4)


def run_demo(method: str = "lora", rlhf: bool = False) -> dict:
    started = time.time()
    figures: dict = {"method": method}
    home = workspace.subdir("demo")

    console.rule("[bold]1. bundled data")
    train_records, eval_records = task_splits()
    train_path, eval_path = home / "tickets-train.jsonl", home / "tickets-eval.jsonl"
    write_jsonl(train_path, train_records)
    write_jsonl(eval_path, eval_records)
    figures["data"] = {"train": len(train_records), "eval": len(eval_records), "train_path": str(train_path)}
    console.print(f"{len(train_records)} training and {len(eval_records)} held-out support tickets")

    console.rule("[bold]2. tiny base model")
    from lamina.models.tiny import ensure_tiny_base

    t = time.time()
    base = ensure_tiny_base()
    figures["base"] = {"path": str(base), "seconds": round(time.time() - t, 1),
                       "exact_match": held_out_em(base, eval_records)}
    console.print(f"base at {base}; held-out exact match {figures['base']['exact_match']:.2f}")

    console.rule(f"[bold]3. supervised fine-tuning ({method})")
    from lamina.train.runner import train

    recipe = demo_recipe(train_path, eval_path, method)
    t = time.time()
    run_dir = train(recipe)
    figures["sft"] = {"run_dir": str(run_dir), "seconds": round(time.time() - t, 1),
                      "exact_match": held_out_em(run_dir, eval_records)}
    console.print(f"fine-tuned held-out exact match {figures['sft']['exact_match']:.2f} (run {run_dir})")

    figures["seconds"] = round(time.time() - started, 1)
    show_summary(figures)
    return figures


def show_summary(figures: dict) -> None:
    table = Table(title="Lamina demo")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("base exact match (held-out)", f"{figures['base']['exact_match']:.2f}")
    table.add_row("fine-tuned exact match (held-out)", f"{figures['sft']['exact_match']:.2f}")
    table.add_row("total seconds", f"{figures['seconds']:.0f}")
    console.print(table)
