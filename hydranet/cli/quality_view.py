"""The console view of ``hydranet autolabel-quality``: one table per task, the teacher's own outputs,
single-frame labels and clip-smoothed labels.

The command's result is a nested dict (``hydranet.engine.quality.autolabel_quality``); people read the
aggregate numbers side by side with the change smoothing brings, machines read ``--json``.
"""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from hydranet.eval import lower_is_better

_MODES = ("single_frame", "clip_smoothed")


def _fmt(x: Any) -> str:
    """4 decimals; ``—`` for a metric that is undefined on these frames (NaN / JSON null)."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _delta(metric: str, single: Any, smoothed: Any) -> str:
    """``clip-smoothed − single-frame``, coloured by whether the change is better for this metric."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (single, smoothed)):
        return "—"
    d = float(smoothed) - float(single)
    if d == 0:
        return f"{d:+.4f}"
    better = (d < 0) if lower_is_better(metric) else (d > 0)
    return f"[{'green' if better else 'red'}]{d:+.4f}[/]"


def quality_tables(result: dict[str, Any], teacher: str = "") -> list[Table]:
    """One table per task of ``result``: its aggregate metrics (keys without ``/``; the headline first), the
    teacher's own outputs, single-frame, clip-smoothed and the change smoothing brings. Per-class/per-state
    numbers are in the JSON (``--json``)."""
    single, smoothed, own = result.get(_MODES[0], {}), result.get(_MODES[1], {}), result.get("teacher", {})
    tables = []
    for task in sorted(set(single) | set(smoothed)):
        a, b = single.get(task, {}), smoothed.get(task, {})
        keys = list(dict.fromkeys([*a, *b]))
        shown = [k for i, k in enumerate(keys) if i == 0 or "/" not in k]
        hidden = len(keys) - len(shown)
        table = Table(title=f"auto labels vs ground truth: [bold]{task}[/] — {result.get('frames', '?')} frames in "
                            f"{result.get('clips', '?')} clip(s)" + (f", teacher {teacher}" if teacher else ""),
                      caption=f"{hidden} per-class/per-state metrics: --json or --out" if hidden else None)
        table.add_column("metric", no_wrap=True)
        table.add_column("teacher's own", justify="right", no_wrap=True)
        table.add_column("single frame", justify="right", no_wrap=True)
        table.add_column("clip-smoothed", justify="right", no_wrap=True)
        table.add_column("Δ (smoothed − single)", justify="right", no_wrap=True)
        for k in shown:
            table.add_row(k + (" (headline)" if k == keys[0] else ""), _fmt(own.get(task, {}).get(k)),
                          _fmt(a.get(k)), _fmt(b.get(k)),
                          _delta(k, a.get(k), b.get(k)))
        tables.append(table)
    return tables
