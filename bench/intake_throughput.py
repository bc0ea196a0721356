"""Intake throughput: Lamina's PII analysis and full intake against raw Presidio.

Baseline: Presidio's AnalyzerEngine with every predefined recognizer and no NLP model (the
offline configuration; the default engine would download spaCy), one process, on the same
~600-character labelled records. Lamina: its configured analyzer (only the wanted
recognizers, character pre-filter, engines built once), then the whole intake pipeline
(decrypt, validate, normalise, mask, dedup, split, contamination, hash, write) on one worker
and on all cores. Rates per core are records per CPU-second (this process and its workers),
so other load on a shared machine does not distort them. Recall and precision on the
labelled spans stand beside each analyzer's rate.

    .venv/bin/python bench/intake_throughput.py --n 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def records_600(n: int, seed: int):
    """`n` labelled texts of about 600 characters, glued from generated ones."""
    from lamina.data.pii_synth import LabelledText, generate

    pool = iter(generate(n * 8, seed))
    out = []
    for _ in range(n):
        item = LabelledText("")
        while len(item.text) < 560:
            part = next(pool)
            offset = len(item.text) + (1 if item.text else 0)
            item.text = f"{item.text} {part.text}" if item.text else part.text
            item.spans += [(s + offset, e + offset, ent) for s, e, ent in part.spans]
        out.append(item)
    return out


def raw_presidio():
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers()
    registry.remove_recognizer("SpacyRecognizer")  # needs a model; the baseline has none
    return AnalyzerEngine(
        registry=registry, nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    )


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: a rate per CPU-second is a rate
    per core that other load on a shared machine does not distort."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, items) -> tuple[float, list]:
    start = cpu_seconds()
    preds = [fn(item.text) for item in items]
    return cpu_seconds() - start, preds


def bench_analyzers(items, threshold: float) -> dict:
    from lamina.data.intake.pii import Finding, Masker, resolve
    from lamina.data.intake.pii_report import score
    from lamina.recipe import PiiSpec

    engine = raw_presidio()
    engine.analyze(items[0].text, language="en")  # warm caches (phonenumbers, tldextract)

    def presidio(text):
        res = engine.analyze(text, language="en", score_threshold=threshold)
        return resolve([Finding(r.entity_type, r.start, r.end, r.score) for r in res])

    masker = Masker(PiiSpec(score_threshold=threshold))
    masker.find(items[0].text)
    out = {}
    for name, fn in (("raw_presidio", presidio), ("lamina_find", masker.find), ("lamina_mask", masker.mask)):
        secs, preds = timed(fn, items)
        preds = [p[1] if isinstance(p, tuple) else p for p in preds]
        rows = score(items, preds)
        out[name] = {
            "records_per_s_per_core": round(len(items) / secs, 1),
            "cpu_seconds": round(secs, 2),
            "pii": rows,
        }
    return out


def bench_pipeline(items, workers: int) -> dict:
    from lamina.data.intake.pipeline import run_intake
    from lamina.data.intake.sources import SourceInfo, add_source
    from lamina.recipe import IntakeSpec

    with tempfile.TemporaryDirectory() as home:
        os.environ["LAMINA_HOME"] = home
        path = Path(home) / "records.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i, item in enumerate(items):
                msgs = [{"role": "user", "content": item.text}, {"role": "assistant", "content": f"ack {i}"}]
                f.write(json.dumps({"messages": msgs, "subject_id": f"s{i % 97}"}) + "\n")
        src = add_source(
            path, SourceInfo("bench", "internal", "bench", "bench", "contract", personal_data=False)
        )
        wall, cpu = time.perf_counter(), cpu_seconds()
        res = run_intake("bench", [(src, "auto")], IntakeSpec(workers=workers))
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "records_per_s": round(len(items) / wall, 1),
        "records_per_s_per_core": round(len(items) / cpu, 1),
        "kept": res.manifest["counts"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="records of ~600 characters")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.35)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    items = records_600(args.n, args.seed)
    result = {
        "n": args.n,
        "mean_chars": round(sum(len(i.text) for i in items) / len(items), 1),
        "cores": os.cpu_count(),
        **bench_analyzers(items, args.threshold),
        "pipeline_1_worker": bench_pipeline(items, 1),
        "pipeline": bench_pipeline(items, args.workers),
    }
    base = result["raw_presidio"]["records_per_s_per_core"]
    print(f"{args.n} records, {result['mean_chars']} chars on average, threshold {args.threshold}")
    print(f"{'analyzer':<16}{'rec/s/core':>12}{'x raw':>8}{'recall':>8}{'precision':>11}")
    for name in ("raw_presidio", "lamina_find", "lamina_mask"):
        r = result[name]
        rate, alls = r["records_per_s_per_core"], r["pii"]["ALL"]
        print(f"{name:<16}{rate:>12}{rate / base:>8.1f}{alls['recall']:>8}{alls['precision']:>11}")
    for key in ("pipeline_1_worker", "pipeline"):
        p = result[key]
        print(
            f"full intake, {p['workers']} worker(s): {p['records_per_s']} rec/s wall, "
            f"{p['records_per_s_per_core']} rec/s per CPU-second ({p['records_per_s_per_core'] / base:.1f} x raw "
            "Presidio's analysis alone)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
