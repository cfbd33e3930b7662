"""hydranet.console.progress: one progress convention; in a log (not a terminal) a plain line at least every
``every_s`` seconds even while no update arrives, and a closing line with the count and the time."""

from __future__ import annotations

import io
import time

from rich.console import Console

from hydranet.console import progress, working


def _plain() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=10_000, no_color=True, force_terminal=False), buf


def test_plain_lines_with_count_share_and_eta_then_a_closing_line():
    console, buf = _plain()
    with progress("render", 4, console, unit="frames", every_s=0.05) as bar:
        for _ in range(4):
            bar.advance()
            bar.note("3.0 frames/s")
            time.sleep(0.06)
    lines = buf.getvalue().splitlines()
    assert any("render: " in line and "/4 frames (" in line and "ETA" in line and "frames/s" in line
               for line in lines), lines
    assert lines[-1].startswith("render: 4/4 frames done in ")


def test_silent_work_still_prints_lines():
    console, buf = _plain()
    with working("quantizing", console, every_s=0.1):
        time.sleep(0.35)  # a library call that reports nothing
    lines = buf.getvalue().splitlines()
    assert sum(line.startswith("quantizing: ") and "done" not in line for line in lines) >= 2, lines
    assert lines[-1].startswith("quantizing: done in ")
