"""Serving throughput through the HTTP API: Lamina against `transformers serve` (continuous
batching) and plain `generate` in a loop, on one device, in one run.

Every tool gets the same random-weight model (a public config, bench/workload.py), the same
prompts (word-level tokenizer: exactly --prompt tokens each) and greedy decoding of --output
tokens. The servers run as subprocesses on 127.0.0.1 and are driven by one asyncio client
holding --concurrency streams open (/v1/completions, stream=true); each level sends
2 x concurrency requests. Reported per tool and level: output tokens/s (all output tokens /
wall time of the level), time to first token and inter-token latency (gaps between streamed
chunks) p50/p95, and peak memory (GPU: device memory in use above the idle baseline, polled;
CPU: the server's resident set, polled).

Lamina serves LoRA versions (r=16 on q/k/v/o, random) registered, signed and aliased in a
throwaway workspace; `lamina` sends all traffic to one adapter, `lamina-8` spreads it over 8
adapters of the same base (mixed in every batch); `lamina-swap` promotes a second version of the
adapter and rolls it back (the real commands) under load and reports the slowest request that
overlapped a swap against the median request. `generate` has no server: it decodes static
batches of `concurrency` prompts with `model.generate` (TTFT = a 1-token generate of the batch;
ITL = the rest of the batch time over the remaining tokens).

    python bench/serve_throughput.py --model qwen2.5-0.5b --device cuda
    python bench/serve_throughput.py --model llama-3.1-8b --device cuda --concurrency 1,16,64
    python bench/serve_throughput.py --smoke --device cpu          # tiny config, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import build_config  # noqa: E402

TOOLS = ("lamina", "lamina-8", "lamina-swap", "transformers", "generate")


def word_tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t1", eos_token="t2")


def build_model_dir(args, root: Path) -> Path:
    """A random-weight model of the config + tokenizer, saved as a Hugging Face directory."""
    from transformers import AutoModelForCausalLM

    config = build_config(args.model)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = 2
    path = root / "model"
    model.save_pretrained(path, safe_serialization=True)
    word_tokenizer(min(config.vocab_size, 50000)).save_pretrained(path)
    del model
    return path


def prompts(args, n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return [" ".join(f"t{rng.randrange(3, 5000)}" for _ in range(args.prompt)) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryPoll:
    """Peak memory while a tool runs: device memory in use (GPU) or the process's RSS (CPU)."""

    def __init__(self, device: str, pid: int | None):
        self.device, self.pid, self.peak, self._stop = device, pid, 0, threading.Event()
        self.base = self._used() if device.startswith("cuda") else 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _used(self) -> int:
        if self.device.startswith("cuda"):
            free, total = torch.cuda.mem_get_info()
            return total - free
        import psutil

        proc = psutil.Process(self.pid or os.getpid())
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._used() - self.base)

    def stop(self) -> float:
        self._stop.set()
        self.thread.join()
        return round(self.peak / 2**30, 2)


async def one_request(client, url: str, model: str, prompt: str, args) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": args.output, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    sent, stamps, usage = time.perf_counter(), [], None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            if any(c.get("text") for c in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
    tokens = (usage or {}).get("completion_tokens") or len(stamps)
    return {"ttft": stamps[0] - sent if stamps else None, "gaps": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
            "tokens": tokens, "sent": sent, "end": time.perf_counter(),
            "version": r.headers.get("x-lamina-version")}


async def drive(port: int, models: list[str], texts: list[str], concurrency: int, args, keep: bool = False,
                until=None) -> dict:
    """Send `texts` with `concurrency` streams open; with `until`, cycle through them until it
    returns True."""
    import itertools

    import httpx

    url = f"http://127.0.0.1:{port}/v1/completions"
    queue = enumerate(itertools.cycle(texts) if until else texts)
    results = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        async def worker():
            for i, text in queue:
                if until is not None and until():
                    return
                results.append(await one_request(client, url, models[i % len(models)], text, args))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {**summarise(results, wall), **({"results": results} if keep else {})}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def summarise(results: list[dict], wall: float) -> dict:
    tokens = sum(r["tokens"] for r in results)
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    gaps = [g for r in results for g in r["gaps"]]
    return {"requests": len(results), "output_tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "ttft_ms_p50": pct(ttft, 0.5), "ttft_ms_p95": pct(ttft, 0.95),
            "itl_ms_p50": pct(gaps, 0.5), "itl_ms_p95": pct(gaps, 0.95)}


def wait_ready(port: int, proc: subprocess.Popen, path: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lamina_workspace(args, model_dir: Path, root: Path, n: int, spare: bool = False) -> dict:
    """A throwaway workspace with `n` LoRA versions of the model registered and at staging
    (and, with `spare`, a second version of adapter0 to swap to)."""
    tag = f"{n}{'-spare' * spare}"
    env = {**os.environ, "LAMINA_HOME": str(root / f"lamina-home-{tag}"), "LAMINA_USER": "bench",
           "LAMINA_CONFIG_DIR": str(root / f"lamina-config-{tag}")}  # its keys go away with the run
    script = Path(__file__).with_name("serve_bench_registry.py")
    subprocess.run([sys.executable, str(script), str(model_dir), str(root / f"runs-{tag}"), str(n)]
                   + ["--spare"] * spare, env=env, check=True)
    return env


def run_server_tool(tool: str, args, model_dir: Path, root: Path, texts_for) -> list[dict]:
    port = free_port()
    if tool.startswith("lamina"):
        n = 8 if tool == "lamina-8" else 1
        env = lamina_workspace(args, model_dir, root, n, spare=tool == "lamina-swap")
        refs = [f"adapter{i}@staging" for i in range(n)]
        cmd = [sys.executable, "-m", "lamina.cli", "serve", *refs, "--port", str(port), "--no-auth", "--guard",
               "off", "--poll", str(args.poll), "--device", args.device, "--max-batch", str(max(args.concurrency)), "--max-tokens",
               str(args.output)]
        health, models = "/readyz", refs
    else:
        env = dict(os.environ)
        cmd = ["transformers", "serve", str(model_dir), "--continuous-batching", "--port", str(port), "--host",
               "127.0.0.1", "--device", args.device, "--dtype", "bfloat16" if args.device.startswith("cuda")
               else "float32"]
        health, models = "/health", [str(model_dir)]
    log = open(root / f"{tool}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        wait_ready(port, proc, health, args.start_timeout)
        asyncio.run(drive(port, models, texts_for(1), 1, args))  # warm-up
        if tool == "lamina-swap":
            return [swap_row(port, models, env, args, texts_for)]
        for c in args.concurrency:
            poll = MemoryPoll(args.device, proc.pid)
            row = asyncio.run(drive(port, models, texts_for(2 * c), c, args))
            rows.append({"tool": tool, "concurrency": c, **row, "peak_gib": poll.stop()})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop(proc)
        log.close()
    return rows


def swap_row(port: int, models: list[str], env: dict, args, texts_for) -> dict:
    """Requests at concurrency min(16, max level) while adapter0@staging is promoted to its
    second version and rolled back (the real commands, in their own processes): the slowest
    request that overlapped a swap against the median request of a run without one."""
    c = min(16, max(args.concurrency))
    calm = asyncio.run(drive(port, models, texts_for(2 * c), c, args, keep=True))
    windows = []

    def move():
        for cmd in (["promote", "adapter0", "2", "--to", "staging", "--reason", "bench"],
                    ["rollback", "adapter0", "--alias", "staging", "--reason", "bench"]):
            time.sleep(2.0)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lamina.cli", *cmd], env=env, check=True, capture_output=True)
            windows.append((start, time.perf_counter() + 2 * args.poll))  # until the server has switched

    mover = threading.Thread(target=move)
    mover.start()
    busy = asyncio.run(drive(port, models, texts_for(2 * c), c, args, keep=True, until=lambda: not mover.is_alive()))
    mover.join()
    base = statistics.median(r["end"] - r["sent"] for r in calm["results"])
    hit = [r["end"] - r["sent"] for r in busy["results"] if any(r["sent"] < b and r["end"] > a for a, b in windows)]
    versions = sorted({r["version"] for r in busy["results"] if r["version"]})
    return {"tool": "lamina-swap", "concurrency": c, "requests": busy["requests"], "median_latency_s": round(base, 3),
            "max_latency_during_swap_s": round(max(hit), 3) if hit else None,
            "ratio": round(max(hit) / base, 2) if hit else None, "versions_seen": versions,
            "tokens_per_s": busy["tokens_per_s"]}


def run_generate(args, model_dir: Path, texts_for) -> list[dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()
    rows = []
    for c in args.concurrency:
        poll = MemoryPoll(args.device, None)
        texts = texts_for(2 * c)
        tokens, first, rest, start = 0, [], [], time.perf_counter()
        for i in range(0, len(texts), c):
            enc = tok(texts[i : i + c], return_tensors="pt", padding=True).to(args.device)
            with torch.inference_mode():
                t0 = time.perf_counter()
                model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=1)
                t1 = time.perf_counter()
                out = model.generate(**enc, max_new_tokens=args.output, min_new_tokens=args.output,
                                     do_sample=False, pad_token_id=1)
                t2 = time.perf_counter()
            n = out.shape[1] - enc["input_ids"].shape[1]
            tokens += n * out.shape[0]
            first.append(t1 - t0)
            rest.append((t2 - t1 - (t1 - t0)) / max(n - 1, 1))
        wall = time.perf_counter() - start - sum(first)  # the 1-token probes are not throughput
        row = {"tool": "generate", "concurrency": c, "requests": len(texts), "output_tokens": tokens,
               "seconds": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
               "ttft_ms_p50": pct(first, 0.5), "ttft_ms_p95": pct(first, 0.95),
               "itl_ms_p50": pct(rest, 0.5), "itl_ms_p95": pct(rest, 0.95), "peak_gib": poll.stop()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    del model
    return rows


def table(rows: list[dict], args) -> str:
    head = ("| tool | concurrency | output tokens/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | peak GiB |\n"
            "|---|---|---|---|---|---|")
    lines = [f"| {r['tool']} | {r['concurrency']} | {r['tokens_per_s']:,} | {r['ttft_ms_p50']} / {r['ttft_ms_p95']} | "
             f"{r['itl_ms_p50']} / {r['itl_ms_p95']} | {r['peak_gib']} |" for r in rows]
    return f"{args.model}, {args.prompt} in / {args.output} out, {args.device}\n" + "\n".join([head, *lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-0.5b", choices=["tiny", "qwen2.5-0.5b", "llama-3.1-8b"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--concurrency", default="1,16,64,256")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--output", type=int, default=256)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--smoke", action="store_true", help="tiny config, 64 in / 16 out, concurrency 1,4")
    p.add_argument("--json", type=Path, help="write every row here")
    p.add_argument("--poll", type=float, default=1.0, help="lamina serve's alias poll (seconds)")
    args = p.parse_args()
    if args.smoke:
        args.model, args.prompt, args.output, args.concurrency = "tiny", 64, 16, "1,4"
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    root = Path(tempfile.mkdtemp(prefix="lamina-serve-bench-"))
    try:
        model_dir = build_model_dir(args, root)
        texts_for = lambda n: prompts(args, n)  # noqa: E731
        rows = []
        for tool in args.tools.split(","):
            try:
                rows += run_generate(args, model_dir, texts_for) if tool == "generate" else \
                    run_server_tool(tool, args, model_dir, root, texts_for)
            except Exception as e:  # one tool failing leaves the others' rows standing
                print(f"{tool} failed: {type(e).__name__}: {e} (log: {root / (tool + '.log')})", flush=True)
                rows.append({"tool": tool, "error": f"{type(e).__name__}: {e}"})
        good = [r for r in rows if "error" not in r and r["tool"] != "lamina-swap"]
        print(table(good, args))
        for r in rows:
            if r["tool"] == "lamina-swap" and "error" not in r:
                print(f"swap under load (concurrency {r['concurrency']}, {r['requests']} requests, versions "
                      f"{', '.join(r['versions_seen'])}): slowest request overlapping a swap "
                      f"{r['max_latency_during_swap_s']} s = {r['ratio']}x the median {r['median_latency_s']} s")
        if args.json:
            args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                             "rows": rows}, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
