"""The one console table of regression-gate rows (``hydranet.eval.gate.GateRow``), printed by ``hydranet gate``,
``hydranet merge --gate-suite`` and ``hydranet vacation``: per gated metric the two models' values, the oriented
change Δ (> 0 = better), its paired-bootstrap interval, the tolerance and the verdict with its reason. Under the
table, one line per suite names the drops beyond tolerance that passed only because the interval holds 0: at
that many frames they cannot be told from noise, and the user should see that rather than a bare "pass"."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hydranet.eval import GateRow

_STATUS = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skipped": "[yellow]skipped[/]"}


def _num(x: float | None, signed: bool = False) -> str:
    """4 decimals (``+`` shown for changes); ``—`` for a value that is not there (NaN, or ``null`` from JSON)."""
    if x is None or math.isnan(x):
        return "—"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _result(r: GateRow) -> str:
    status = "[yellow]pass[/]" if r.not_significant else _STATUS[r.status]
    return status + (f" {escape(r.reason)}" if r.reason else "")


def _noise_note(suite: str, rows: Sequence[GateRow], more_frames: str = "--frames") -> str | None:
    """One line naming the suite's ``not_significant`` rows (a drop beyond tolerance whose interval holds 0), with
    Δ, interval and frames of each, and the option that evaluates more frames; None when there are none."""
    weak = [r for r in rows if r.not_significant]
    if not weak:
        return None
    each = ", ".join(f"{r.task}.{r.metric} Δ {r.delta:+.3f} (CI {r.low:+.3f}..{r.high:+.3f}, {r.frames} frames)"
                     for r in weak)
    return (f"{suite}: {len(weak)} drop(s) beyond tolerance passed as not significant: {each}. At this sample "
            f"size such drops are within bootstrap noise; evaluate more frames ({more_frames}) to decide them.")


def print_gate(console: Console, suite: str, rows: Sequence[GateRow], *, frames: int, resamples: int,
               confidence: float, names: tuple[str, str] = ("baseline", "candidate"),
               more_frames: str = "--frames") -> None:
    """Print the gate table of one suite's ``rows`` on ``console`` (title: the suite, its ``frames`` evaluated,
    ``resamples`` and ``confidence`` of the bootstrap; ``names``: the two models' column headers), then the
    line naming the drops beyond tolerance that passed as not significant, if any."""
    table = Table(title=f"gate [bold]{escape(suite)}[/] — {frames} frames, {resamples} bootstrap resamples, "
                        f"{confidence:.0%} CI (Δ > 0 = better)")
    for col in ("task", "metric", *names, "Δ", "CI", "tolerance", "result"):
        table.add_column(col, no_wrap=col != "result", justify="right" if col in (*names, "Δ", "tolerance") else "left")
    for r in rows:
        table.add_row(r.task, r.metric, _num(r.baseline), _num(r.candidate), _num(r.delta, signed=True),
                      f"{_num(r.low, signed=True)} .. {_num(r.high, signed=True)}", _num(r.tolerance), _result(r))
    console.print(table)
    note = _noise_note(suite, rows, more_frames)
    if note:
        console.print(f"[yellow]{escape(note)}[/]")
