"""Small inline-SVG charts for the HTML report (no plotting library, no external files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from hydranet.viz import SERIES_COLORS


def _frame(width: int, height: int, title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<rect width="100%" height="100%" fill="#fff"/>'
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}'
            f"</text>{body}</svg>")


def _axes(x0: float, y0: float, w: float, h: float, xlabel: str, ylabel: str, yticks: Sequence[float],
          ymax: float, xticks: Sequence[tuple[float, str]], slant: float = 0.0) -> str:
    """Axes, grid, ticks and labels; ``slant`` > 0: x tick labels turned by -35 degrees, ``slant`` px of room
    below them (names too long to sit side by side, e.g. camera names)."""
    parts = [f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>',
             f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="#333"/>']
    for t in yticks:
        y = y0 + h - h * t / ymax
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>')
    for pos, label in xticks:
        x, y = x0 + w * pos, y0 + h + 13
        turn = f' transform="rotate(-35 {x:.1f} {y - 4})"' if slant else ""
        parts.append(f'<text x="{x:.1f}" y="{y}" text-anchor="{"end" if slant else "middle"}" font-size="10"{turn}>'
                     f"{escape(label)}</text>")
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 28 + slant}" text-anchor="middle" font-size="11">'
                 f"{escape(xlabel)}</text>")
    parts.append(f'<text x="12" y="{y0 + h / 2}" text-anchor="middle" font-size="11" '
                 f'transform="rotate(-90 12 {y0 + h / 2})">{escape(ylabel)}</text>')
    return "".join(parts)


def _nice_max(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    top = max(vals) if vals else 1.0
    if top <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(top))
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= top:
            return step * mag
    return 10 * mag


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
               width: int = 360, height: int = 260) -> str:
    """Curves in the unit square (e.g. precision vs recall), one colour per series, with a legend."""
    x0, y0, w, h = 44, 26, width - 150, height - 70
    body = [_axes(x0, y0, w, h, xlabel, ylabel, [0, 0.25, 0.5, 0.75, 1.0], 1.0,
                  [(t, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1.0)])]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        pts = " ".join(f"{x0 + w * float(x):.1f},{y0 + h - h * min(max(float(y), 0.0), 1.0):.1f}"
                       for x, y in zip(xs, ys, strict=True))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        ly = y0 + 8 + 16 * i
        body.append(f'<rect x="{x0 + w + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                    f'<text x="{x0 + w + 24}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    if not series:
        body.append(f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle" font-size="12" fill="#888">'
                    "no ground truth</text>")
    return _frame(width, height, title, "".join(body))


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str,
              width: int = 420, height: int = 260, xlabel: str = "") -> str:
    """Grouped bars; NaN bars are left out (marked "n/a"). Group names wider than their slot are slanted and
    the chart grows to hold them, so neighbouring names never overlap."""
    x0, y0, w, h = 60, 26, width - 72 - (90 if len(series) > 1 else 0), height - 70
    widest = max((len(g) for g in groups), default=0) * 6.0  # ~6 px per character at font-size 10
    slant = round(widest * 0.6) if groups and widest > 0.9 * w / len(groups) else 0
    height += slant
    ymax = _nice_max([v for vals in series.values() for v in vals])
    ticks = [ymax * f for f in (0, 0.25, 0.5, 0.75, 1.0)]
    n_g, n_s = max(len(groups), 1), max(len(series), 1)
    gw = w / n_g
    bw = gw * 0.8 / n_s
    body = [_axes(x0, y0, w, h, xlabel, ylabel, ticks, ymax, [((i + 0.5) / n_g, g) for i, g in enumerate(groups)],
                  slant)]
    for j, (name, vals) in enumerate(series.items()):
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        for i, v in enumerate(vals):
            x = x0 + gw * i + gw * 0.1 + bw * j
            if v is None or not math.isfinite(v):
                body.append(f'<text x="{x + bw / 2:.1f}" y="{y0 + h - 3}" text-anchor="middle" font-size="8" '
                            f'fill="#999">n/a</text>')
                continue
            bh = h * min(v, ymax) / ymax
            body.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{color}">'
                        f"<title>{escape(name)} {escape(groups[i])}: {v:.4g}</title></rect>")
        if len(series) > 1:
            ly = y0 + 8 + 16 * j
            body.append(f'<rect x="{x0 + w + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                        f'<text x="{x0 + w + 24}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    return _frame(width, height, title, "".join(body))


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str], title: str,
            row_label: str = "ground truth", col_label: str = "predicted", cell: int = 48) -> str:
    """A count matrix with row-normalised shading and the counts written in."""
    x0, y0 = 100, 58
    width = max(x0 + cell * len(cols) + 20, 7 * len(title) + 30)  # room for the title
    height = y0 + cell * len(rows) + 20
    body = [f'<text x="{x0 + cell * len(cols) / 2}" y="{y0 - 24}" text-anchor="middle" font-size="11">'
            f"{escape(col_label)}</text>",
            f'<text x="14" y="{y0 + cell * len(rows) / 2}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 14 {y0 + cell * len(rows) / 2})">{escape(row_label)}</text>']
    for j, c in enumerate(cols):
        body.append(f'<text x="{x0 + cell * (j + 0.5)}" y="{y0 - 6}" text-anchor="middle" font-size="11">'
                    f"{escape(c)}</text>")
    for i, r in enumerate(rows):
        total = sum(matrix[i]) or 1
        body.append(f'<text x="{x0 - 6}" y="{y0 + cell * (i + 0.5) + 4}" text-anchor="end" font-size="11">'
                    f"{escape(r)}</text>")
        for j in range(len(cols)):
            v = matrix[i][j]
            shade = int(255 - 200 * v / total)
            fill = f"rgb({shade},{shade},255)"
            body.append(f'<rect x="{x0 + cell * j}" y="{y0 + cell * i}" width="{cell}" height="{cell}" '
                        f'fill="{fill}" stroke="#fff"/>'
                        f'<text x="{x0 + cell * (j + 0.5)}" y="{y0 + cell * (i + 0.5) + 4}" text-anchor="middle" '
                        f'font-size="12">{int(v)}</text>')
    return _frame(width, height, title, "".join(body))
