"""Evaluation suites. Each exposes `run(ctx, target) -> SuiteResult`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SuiteResult:
    metrics: dict[str, float | int | None]
    samples: list[dict] = field(default_factory=list)  # a few items with outputs, for the report
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why
