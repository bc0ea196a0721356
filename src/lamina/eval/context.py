"""What every suite sees: the models under test and the data they are tested on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.data.formats import Example
from lamina.recipe import EvalSpec, PiiSpec


@dataclass
class Target:
    """One model under evaluation: the candidate, the base or the champion."""

    role: str  # candidate | base | champion
    ref: str  # what the user named: a path or a registry reference
    path: Path
    model: Any
    tokenizer: Any
    run: dict | None = None  # run.json when the target is a Lamina run
    outputs: list[str] = field(default_factory=list)  # all generated text, scanned for PII

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)


@dataclass
class EvalContext:
    spec: EvalSpec
    pii: PiiSpec
    eval_records: list[Example]  # held-out chat records
    train_records: list[Example]  # what the candidate trained on (membership inference)
    canaries: list[dict]
    progress: Any = None  # a rich Progress, or None
    judge: Any = None  # lamina.eval.suites.judge.JudgeClient when configured
    # What later targets need from earlier ones, kept so only one model is loaded at a time:
    base_losses: tuple[list[float], list[float]] | None = None  # (members, held-out), by the base
    opponent: tuple[str, list[str]] | None = None  # (role, answers to the judge prompts)
    _masker: Any = None

    def masker(self):
        """Intake's PII finder, built once (Presidio engines take seconds to make)."""
        if self._masker is None:
            from lamina.data.intake.pii import Masker

            self._masker = Masker(self.pii.model_copy(update={"enabled": True}))
        return self._masker

    def pii_findings(self, texts: list[str]) -> list[list]:
        m = self.masker()
        return [m.find(t) for t in texts]
