"""Two small inline-SVG charts for the report: a line chart (training curves) and a bar chart
of signed deltas. Inline SVG keeps the HTML one file, and its labels are searchable text."""

from __future__ import annotations

from html import escape

COLOURS = ("#2563eb", "#d97706", "#059669", "#dc2626")


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def line_chart(
    series: dict[str, list[tuple[float, float]]], title: str, width: int = 640, height: int = 260
) -> str:
    """One polyline per series over shared axes; empty string when there is nothing to draw."""
    points = [pt for pts in series.values() for pt in pts]
    if len(points) < 2:
        return ""
    left, right, top, bottom = 56, 16, 28, 36
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{sy(y1) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(y1)}</text>',
        f'<text x="{left - 4}" y="{sy(y0) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(y0)}</text>',
        f'<text x="{left}" y="{height - bottom + 14}" font-size="10">{_fmt(x0)}</text>',
        f'<text x="{width - right}" y="{height - bottom + 14}" font-size="10" text-anchor="end">{_fmt(x1)}</text>',
    ]
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>')
        parts.append(
            f'<text x="{width - right - 4}" y="{top + 14 * (i + 1)}" font-size="11" text-anchor="end" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def delta_bars(rows: list[tuple[str, dict[str, float]]], title: str, width: int = 640) -> str:
    """Horizontal bars around zero: one row per metric, one bar per reference (base, champion)."""
    if not rows:
        return ""
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
        parts.append(f'<text x="8" y="{y + bar_h + 2}" font-size="11">{escape(label)}</text>')
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
