"""Model cards in the Hugging Face format: YAML metadata, then prose sections.

The metadata keys are the Hub's (`base_model`, `base_model_relation`, `datasets`,
`library_name`, `model-index`), so the card reads correctly wherever HF cards are read. The
governance section is Lamina's: data sources and licences, PII handling, gate, signer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from lamina.fsio import sha256_json
from lamina.recipe import RegistrySpec

_RELATION = {"adapter": "adapter", "model": "finetune"}
# Methods whose adapter/ is in PEFT's format; Lamina's own (bottleneck, bitfit) are not.
_PEFT_METHODS = {"lora", "qlora", "ia3", "prompt", "prefix"}


def _library(artifact: str, method: str) -> str:
    if artifact == "model":
        return "transformers"
    return "peft" if method in _PEFT_METHODS else "lamina"


def _checks(gate: dict) -> list[dict]:
    return [c for c in gate.get("checks", []) if isinstance(c, dict)]


def _results(gate: dict) -> list[dict]:
    """model-index metrics: the gate's suite results when present, else its checked values."""
    metrics = []
    for suite, values in (gate.get("results") or {}).items():
        for key, value in (values or {}).items() if isinstance(values, dict) else []:
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "n":
                metrics.append({"type": f"{suite}.{key}", "value": value, "name": f"{suite} {key}"})
    if not metrics:
        for c in _checks(gate):
            expr = str(c.get("expr") or c.get("name") or "")
            if isinstance(c.get("value"), int | float):
                metrics.append(
                    {"type": expr.split()[0] if expr else "check", "value": c["value"], "name": expr}
                )
    return metrics


def metadata(lineage: dict, run: dict, gate: dict) -> dict[str, Any]:
    data = run.get("data") or {}
    dataset = lineage.get("dataset_version") or data.get("train_sha256")
    method = (run.get("method") or {}).get("name", "unknown")
    meta: dict[str, Any] = {
        **portable_base(lineage, run),
        "base_model_relation": _RELATION.get(lineage["artifact"], "finetune"),
        "base_model_sha256": sha256_json({k: (run.get("base") or {}).get(k) for k in ("files", "tokenizer_files")}),
        "library_name": _library(lineage["artifact"], method),
        "datasets": [str(dataset)] if dataset else [],
        "tags": ["lamina", method, "text-generation"],
        "model-index": [
            {
                "name": lineage["name"],
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": str(dataset), "type": "lamina-dataset-version"},
                        "metrics": _results(gate),
                    }
                ],
            }
        ],
    }
    licences = sorted({str(x).lower() for x in [lineage.get("licence") or data.get("license")] if x}
                      | {str(src["licence"]).lower() for src in lineage.get("sources") or [] if src.get("licence")})
    if len(licences) == 1:
        meta["license"] = licences[0]
    elif licences:  # the Hub's value for a licence that is not one SPDX id; the list says which
        meta["license"], meta["license_name"] = "other", " AND ".join(licences)
    return meta


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def portable_base(lineage: dict, run: dict) -> dict[str, Any]:
    """A base reference that means the same thing on another machine: the registry reference
    of a registered parent, a Hub id with its revision, or the offline tiny base — never an
    absolute local path (the card's base_model_sha256 pins the files in every case)."""
    base = run.get("base") or {}
    parent = lineage.get("parent")
    out: dict[str, Any] = {}
    ref = str(base.get("ref") or "")
    if parent:
        out["base_model"] = f"{parent['name']}/{parent['version']}"
    elif HUB_ID.match(ref) and not Path(ref).exists():
        out["base_model"] = ref
        if base.get("revision"):
            out["base_model_revision"] = str(base["revision"])
    else:
        path = Path(str(base.get("stored_from") or base.get("path") or ref))
        config = path / "config.json"
        origin = (json.loads(config.read_text()).get("_name_or_path") if config.is_file() else None) or ""
        if HUB_ID.match(origin) and not Path(origin).exists():
            out["base_model"] = origin  # the Hub model the local copy came from
        elif ref == "tiny":
            out["base_model"] = "lamina/tiny"  # built offline by Lamina; pinned by base_model_sha256
    return out


def _training(run: dict) -> list[str]:
    method = run.get("method") or {}
    hyper = ", ".join(f"{k}={v}" for k, v in method.items() if k != "name") or "defaults"
    return [
        f"- Method: {method.get('name', 'unknown')} ({hyper}); objective {run.get('objective', 'sft')}",
        f"- Steps: {run.get('steps')}; tokens: {run.get('tokens')}; seed: {run.get('seed')}",
        f"- Hardware: {run.get('device')} (precision {run.get('precision')}, attention {run.get('attention')})",
        f"- Code: {(run.get('code') or {}).get('git_commit')} (dirty: {(run.get('code') or {}).get('dirty')})",
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in (run.get('versions') or {}).items())}",
        "- Full resolved recipe: `recipe.yaml`; per-step metrics: `metrics.jsonl`.",
    ]


def _governance(lineage: dict, run: dict, gate: dict) -> list[str]:
    data = run.get("data") or {}
    sources = lineage.get("sources") or [{"path": data.get("train"), "licence": lineage.get("licence")}]
    dv = lineage.get("dataset_version")
    pii = data.get("pii") or (
        f"masked at intake; see the card of dataset version {dv}"
        if dv
        else "raw files: no intake PII masking recorded"
    )
    lines = ["- Data sources and licences:"]
    for s in sources:
        s = s if isinstance(s, dict) else {"path": s}
        basis = f", lawful basis: {s['lawful_basis']}" if s.get("lawful_basis") else ""
        sha = f", sha256 {s['sha256']}" if s.get("sha256") else ""
        lines.append(
            f"  - {s.get('path') or s.get('name')} — licence: {s.get('licence') or 'not recorded'}{basis}{sha}"
        )
    lines += [
        f"- Dataset version: {lineage.get('dataset_version') or 'none (raw files)'}; "
        f"train sha256 {data.get('train_sha256')}, eval sha256 {data.get('eval_sha256')}",
        f"- PII handling: {pii}",
        f"- Gate verdict: {'passed' if gate.get('passed') else 'failed'} "
        f"({sum(1 for c in _checks(gate) if c.get('passed'))}/{len(_checks(gate))} checks passed; "
        f"gate.json sha256 {lineage['gate']['sha256']})",
    ]
    lines += [
        f"  - {c.get('expr') or c.get('name')}: {c.get('value')} ({'pass' if c.get('passed') else 'FAIL'})"
        for c in _checks(gate)
    ]
    parent = lineage.get("parent")
    lines += [
        f"- Parent version: {parent['name']}/{parent['version']}" if parent else "- Parent version: none",
        f"- Trained by {lineage.get('trained_by')}; registered by {lineage['registered_by']} at {lineage['registered']}",
        f"- Signed (OpenSSF model signing, ECDSA P-256) by key sha256:{lineage['signer']}; "
        "verify with `lamina verify NAME/VERSION` or `model_signing verify key`",
    ]
    return lines


def render(lineage: dict, run: dict, gate: dict, spec: RegistrySpec | None = None) -> str:
    """The card's full text (README.md of the version directory)."""
    spec = spec or RegistrySpec()
    front = yaml.safe_dump(metadata(lineage, run, gate), sort_keys=False, allow_unicode=True)
    body = [
        f"# {lineage['name']}",
        "",
        f"Fine-tuned from `{(run.get('base') or {}).get('ref')}` by Lamina run `{lineage['run_id']}`.",
        "",
        "## Intended use",
        spec.intended_use,
        "",
        "## Out-of-scope use",
        spec.out_of_scope,
        "",
        "## Limitations",
        spec.limitations,
        "",
        "## Training details",
        *_training(run),
        "",
        "## Evaluation",
        *([f"- {m['name']}: {m['value']}" for m in _results(gate)] or ["- no numeric results recorded"]),
        "",
        "## Governance",
        *_governance(lineage, run, gate),
        "",
    ]
    return f"---\n{front}---\n\n" + "\n".join(body)
