"""Time `lamina demo` from an empty workspace, then again with the tiny base cached.

Each run is `python -m lamina.cli demo --json` in a subprocess with its own LAMINA_HOME (the
second run reuses the first's workspace, so only the pretraining is skipped). Prints the wall
time of each stage, the tokens/s of each training stage, torch's thread count, bf16 use and the
machine's load average before and after — every figure with the conditions it was measured
under — as lines ready to paste, and writes them as JSON with --json-out.

    python bench/cpu_demo.py                 # first + second run
    python bench/cpu_demo.py --runs 1        # first run only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("intake", "base", "sft", "gate", "dpo", "release")


def run_once(home: Path, extra: list[str]) -> dict:
    env = {**os.environ, "LAMINA_HOME": str(home), "HF_HUB_OFFLINE": "1", "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": ""}
    load_before = os.getloadavg()
    started = time.perf_counter()
    before = os.times()
    proc = subprocess.run([sys.executable, "-m", "lamina.cli", "demo", "--json", *extra], env=env,
                          capture_output=True, text=True, cwd=home)
    wall = time.perf_counter() - started
    after = os.times()
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"lamina demo exited {proc.returncode}")
    figures = json.loads(proc.stdout)
    return {
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(after.children_user + after.children_system - before.children_user
                             - before.children_system, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "figures": figures,
        "training": training_rates(figures),
    }


def training_rates(figures: dict) -> dict:
    """Tokens/s of each training stage, from what the runs wrote (the base's summary, run.json)."""
    rates = {}
    base_info = Path(figures["base"]["path"]) / "lamina_base.json"
    if base_info.is_file():
        info = json.loads(base_info.read_text())
        rates["pretraining"] = {"tokens": info["tokens"], "seconds": info["train_seconds"],
                                "tokens_per_s": round(info["tokens"] / max(info["train_seconds"], 1e-9))}
    for key, run in (("sft", figures["sft"].get("run_dir")), ("dpo", figures.get("dpo", {}).get("run_dir"))):
        if run and (Path(run) / "run.json").is_file():
            info = json.loads((Path(run) / "run.json").read_text())
            rates[key] = {"tokens": info["tokens"], "seconds": info["train_seconds"],
                          "tokens_per_s": round(info["tokens"] / max(info["train_seconds"], 1e-9)),
                          "precision": info.get("precision"), "attention": info.get("attention")}
    return rates


def report(label: str, r: dict) -> list[str]:
    f = r["figures"]
    m = f.get("machine", {})
    lines = [
        f"{label}: {r['wall_seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s CPU), demo's own clock "
        f"{f['seconds']:.1f} s; load average before {fmt_load(r['load_before'])}, after {fmt_load(r['load_after'])}; "
        f"torch threads {m.get('torch_threads')} of {m.get('cpus')} cores, CPU bf16 {m.get('cpu_bf16')}",
        "  stages (wall s / CPU s): " + ", ".join(
            f"{k} {v['seconds']:.1f}/{v['cpu_seconds']:.1f}" for k, v in f.get("stages", {}).items()),
    ]
    for k, v in r["training"].items():
        extra = f", {v['precision']}, attention {v['attention']}" if "precision" in v else ""
        lines.append(f"  {k}: {v['tokens']:,} tokens in {v['seconds']:.1f} s = {v['tokens_per_s']:,} tokens/s{extra}")
    dpo = f.get("dpo", {})
    lines.append(
        f"  results: base exact match {f['base']['exact_match']:.2f}, fine-tuned {f['sft']['exact_match']:.2f}, "
        f"SFT gate {'passed' if f['eval']['passed'] else 'FAILED'}, "
        f"DPO gate {'passed' if f.get('dpo_eval', {}).get('passed') else 'FAILED/skipped'}, "
        f"preference accuracy {dpo.get('accuracy_before', '-')} -> {dpo.get('accuracy_after', '-')}, "
        f"production after rollback {f['release'].get('production')}"
    )
    return lines


def fmt_load(load: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, choices=(1, 2), help="1: first run only; 2: first + second")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--json-out", type=Path, help="write every figure as JSON here")
    args = ap.parse_args()
    import torch

    print(f"# lamina demo on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="lamina-demo-") as tmp:
        home = Path(tmp)
        for i, label in enumerate(("first run (empty workspace, pretraining included)",
                                   "second run (tiny base cached)")[: args.runs]):
            r = run_once(home, ["--method", args.method])
            results["first" if i == 0 else "second"] = r
            print("\n".join(report(label, r)), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
