"""Helpers for intake tests: small chat corpora with planted PII and subject ids."""

from __future__ import annotations

import json
from pathlib import Path

from lamina.data import pii_synth
from lamina.data.intake.sources import SourceInfo


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def tickets(n: int, seed: int = 0, subjects: int = 10) -> list[dict]:
    """Chat records: a ticket with PII planted in the user turn, a fixed-format answer."""
    out = []
    for i, t in enumerate(pii_synth.generate(n, seed)):
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "Answer as ORDER=...; ISSUE=..."},
                    {"role": "user", "content": f"Ticket {i}: {t.text}"},
                    {"role": "assistant", "content": f"ORDER={1000 + i}; ISSUE=case {i}"},
                ],
                "subject_id": f"subject-{i % subjects}",
            }
        )
    return out


def info(name: str = "tickets", **kw) -> SourceInfo:
    base = dict(licence="cc-by-4.0", origin="synthetic", purpose="support bot", lawful_basis="consent")
    base.update(consent_ref="form-7")
    base.update(kw)
    return SourceInfo(name, **base)
