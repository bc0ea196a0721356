"""The report's charts: ticks and axis titles on the loss chart, a curve even for a one-step
run, and the good direction of each metric marked on the delta chart."""

from __future__ import annotations

import re

from lamina.eval import svg
from lamina.eval.report import BETTER


def _texts(markup: str, cls: str) -> list[str]:
    return re.findall(rf'<text class="{cls}"[^>]*>([^<]*)</text>', markup)


def test_ticks_are_round_and_cover_the_range():
    assert svg.ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.ticks(1, 60) == [10, 20, 30, 40, 50, 60]
    assert svg.ticks(0.437, 2.91) == [0.5, 1.0, 1.5, 2.0, 2.5]


def test_loss_chart_has_axis_titles_and_ticks():
    chart = svg.line_chart({"loss": [(s, 3.0 / s) for s in range(1, 61)]}, "Training loss by step")
    assert _texts(chart, "axis-title") == ["step", "loss"]
    assert _texts(chart, "tick") == ["0.5", "1", "1.5", "2", "2.5", "3", "10", "20", "30", "40", "50", "60"]


def test_a_one_step_run_still_gets_its_point():
    chart = svg.line_chart({"loss": [(1, 2.5)]}, "Training loss by step")
    assert chart.count("<circle") == 1
    # the lone point sits mid-plot (28 px top margin, 44 bottom, 260 high) over step 1
    assert re.search(r'<circle cx="([\d.]+)" cy="122.0"', chart)
    assert "1" in _texts(chart, "tick")


def test_delta_chart_marks_the_good_direction():
    rows = [("task.exact_match", {"base": 0.4}), ("safety.unsafe_rate", {"base": 0.1})]
    chart = svg.delta_bars(rows, "deltas", better=BETTER)
    assert "task.exact_match (↑ better)" in chart and "safety.unsafe_rate (↓ better)" in chart
    bands = re.findall(r'<rect class="better" x="([\d.]+)"', chart)
    mid = float(re.search(r'<line x1="([\d.]+)"', chart).group(1))
    # higher-is-better shades the right half, lower-is-better the left half
    assert float(bands[0]) == mid and float(bands[1]) < mid
