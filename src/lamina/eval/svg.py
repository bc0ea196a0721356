"""Two small inline-SVG charts for the report: a line chart (training curves, with ticks and
axis titles) and a bar chart of signed deltas (the good direction shaded). Inline SVG keeps the HTML one file, and its labels are searchable text."""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#2563eb", "#d97706", "#059669", "#dc2626")


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    power = 10 ** math.floor(math.log10((hi - lo) / count))

    def spaced(step: float) -> list[float]:
        first = math.ceil(lo / step - 1e-9) * step
        return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]

    # the spacing whose tick count is nearest `count` (ties: the wider spacing)
    options = [spaced(m * power) for m in (10, 5, 2, 1)]
    return min(options, key=lambda t: abs(len(t) - count))


def _span(lo: float, hi: float) -> tuple[float, float]:
    """An axis range; a single value sits in the middle of one around it."""
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.2 or 1.0
    return lo - pad, lo + pad


def line_chart(
    series: dict[str, list[tuple[float, float]]], title: str, width: int = 640, height: int = 260,
    x_label: str = "step", y_label: str = "loss",
) -> str:  # fmt: skip
    """One polyline per series over shared axes with ticks and axis titles (points marked when
    there are few, so a one-step run still shows); empty string when there is nothing to draw."""
    points = [pt for pts in series.values() for pt in pts]
    if not points:
        return ""
    left, right, top, bottom = 64, 16, 28, 44
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys), max(ys))

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    base, mid_y = height - bottom, (top + height - bottom) / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>',
        f'<text class="axis-title" x="{(left + width - right) / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">{escape(x_label)}</text>',
        f'<text class="axis-title" x="14" y="{mid_y:.1f}" font-size="11" text-anchor="middle" transform="rotate(-90 14 {mid_y:.1f})">{escape(y_label)}</text>',
    ]
    for t in ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{_fmt(t)}</text>')
    whole = all(float(x).is_integer() for x in xs)  # steps: no 2.5
    for t in ticks(x0, x1):
        if whole and not float(t).is_integer():
            continue
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#999"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{base + 15}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>')
        if len(pts) <= 40:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
        parts.append(
            f'<text x="{width - right - 4}" y="{top + 14 * (i + 1)}" font-size="11" text-anchor="end" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def delta_bars(
    rows: list[tuple[str, dict[str, float]]], title: str, width: int = 640, better: dict[str, int] | None = None
) -> str:
    """Horizontal bars around zero: one row per metric, one bar per reference (base, champion).
    `better` gives a metric's good direction (+1: higher is better, -1: lower): that side of the
    row is shaded green and the label says which way is good."""
    if not rows:
        return ""
    better = better or {}
    refs = sorted({r for _, d in rows for r in d})
    bar_h, gap, label_w, top = 10, 8, 220, 30
    row_h = bar_h * len(refs) + gap
    height = top + row_h * len(rows) + 24
    span = max((abs(v) for _, d in rows for v in d.values()), default=0.0) or 1.0
    mid = label_w + (width - label_w - 16) / 2
    half = (width - label_w - 16) / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="8" y="18" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{mid:.1f}" y1="{top - 4}" x2="{mid:.1f}" y2="{height - 20}" stroke="#999"/>',
        f'<text x="{mid - half:.1f}" y="{height - 6}" font-size="10">-{_fmt(span)}</text>',
        f'<text x="{mid + half:.1f}" y="{height - 6}" font-size="10" text-anchor="end">+{_fmt(span)}</text>',
    ]
    for i, (label, d) in enumerate(rows):
        y = top + i * row_h
        sign = better.get(label)
        if sign:
            x = mid if sign > 0 else mid - half
            parts.append(f'<rect class="better" x="{x:.1f}" y="{y - 2}" width="{half:.1f}" height="{row_h - gap + 3}" '
                         f'fill="#dcfce7"><title>{"higher" if sign > 0 else "lower"} is better</title></rect>')  # fmt: skip
        shown = f"{label} ({'↑' if sign > 0 else '↓'} better)" if sign else label
        parts.append(f'<text x="8" y="{y + bar_h + 2}" font-size="11">{escape(shown)}</text>')
        for j, ref in enumerate(refs):
            if ref not in d:
                continue
            v = d[ref]
            w = abs(v) / span * half
            x = mid if v >= 0 else mid - w
            colour = COLOURS[j % len(COLOURS)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y + j * bar_h}" width="{max(w, 0.5):.1f}" height="{bar_h - 1}" fill="{colour}">'
                f"<title>{escape(label)} vs {escape(ref)}: {v:+.4g}</title></rect>"
            )
    legend = " ".join(
        f'<tspan fill="{COLOURS[j % len(COLOURS)]}">&#9632; vs {escape(r)}</tspan>'
        for j, r in enumerate(refs)
    )
    parts.append(f'<text x="{width - 8}" y="18" font-size="11" text-anchor="end">{legend}</text>')
    parts.append("</svg>")
    return "".join(parts)
