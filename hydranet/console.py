"""The one way hydranet makes a rich ``Console``: live and coloured on a terminal, plain otherwise.

When the stream is not a terminal (CI logs, ``| cat``, ``> file``) rich would assume 80 columns and
wrap or squeeze tables (a result column collapsed to zero width, numbers split over lines). Here
such a console has no width limit and no colour codes, so every table row and log line is printed
complete on one line; live progress bars are replaced by periodic plain lines by their callers
(``is_live(console)``). ``progress`` is the one progress display every long command uses.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from rich.console import Console

__all__ = ["Progress", "is_live", "make_console", "progress", "working"]

_PLAIN_WIDTH = 10_000  # "unlimited": rows are as wide as their content


def make_console(stderr: bool = False) -> Console:
    """A ``Console`` on stdout (or stderr) that never wraps or truncates when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_PLAIN_WIDTH, no_color=True, highlight=False, soft_wrap=True)


def is_live(console: Console) -> bool:
    """Whether live displays (progress bars, spinners) can redraw on this console."""
    return console.is_terminal and not console.is_dumb_terminal


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of one piece of long work, the same on every command: a rich bar with count, elapsed time
    and ETA on a terminal; on a log or pipe (``is_live`` false) a plain line at least every ``every_s``
    seconds while the work runs, even between updates (``label: 12/48 frames (25 %), 31 s, ETA 93 s``), and
    a closing line with the total time. Nothing long is silent.

    Use as a context manager (``progress(...)``); ``update(done, total=None)`` sets the count (``total``
    may stay unknown, ``None``), ``advance(n)`` adds to it, ``note(text)`` changes the text shown after the
    count (e.g. current losses, or the step now running).
    """

    def __init__(self, label: str, total: int | None, console: Console, unit: str = "", every_s: float = 10.0,
                 transient: bool = False) -> None:
        self.label, self.total, self.console, self.unit, self.every_s = label, total, console, unit, every_s
        self.done = 0
        self.text = ""
        self._t0 = self._last_line = time.perf_counter()
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if is_live(console):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            counted = [MofNCompleteColumn(), TextColumn(unit)] if total is not None else []
            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), *counted, TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                     console=console, transient=transient)
            self._task = self._bar.add_task(label, total=total, note="")

    def __enter__(self) -> Progress:
        self._t0 = self._last_line = time.perf_counter()
        if self._bar is not None:
            self._bar.start()
        else:
            self._heartbeat = threading.Thread(target=self._beat, name=f"progress {self.label}", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
            return
        if self._heartbeat is not None:
            self._heartbeat.join()
        if exc_type is None:  # the count only when something was counted (reused work counts nothing)
            total = f"/{self.total}" if self.total else ""
            count = f" {self.done}{total} {self.unit}".rstrip() if self.done else ""
            self._print(f"{self.label}:{count} done in {self.elapsed:.0f} s")

    def _beat(self) -> None:
        """Plain consoles: a line whenever ``every_s`` passed without one (work between updates included)."""
        while not self._stop.wait(min(1.0, self.every_s)):
            if time.perf_counter() - self._last_line >= self.every_s:
                self._print(self.line())

    def _print(self, text: str) -> None:
        with self._lock:
            self._last_line = time.perf_counter()
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    @property
    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.perf_counter() - self._t0

    def eta(self) -> float | None:
        """Seconds left at the rate so far, or None (nothing done yet, or no total)."""
        if not self.total or self.done <= 0:
            return None
        return self.elapsed * max(0, self.total - self.done) / self.done

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count of units done (and the total when it becomes known)."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
        elif time.perf_counter() - self._last_line >= self.every_s:
            self._print(self.line())

    def advance(self, n: int = 1) -> None:
        """Add ``n`` units done."""
        self.update(self.done + n)

    def note(self, text: str) -> None:
        """Text shown after the count (the bar's last column; the plain lines' end)."""
        self.text = text
        if self._bar is not None:
            self._bar.update(self._task, note=text)

    def line(self) -> str:
        """The plain progress line: label, count, share, elapsed seconds, ETA and the note."""
        counted = self.done or self.total
        count = " " + " ".join(x for x in (f"{self.done}/{self.total}" if self.total else f"{self.done}", self.unit)
                               if x) if counted else ""
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        eta = self.eta()
        tail = f", ETA {eta:.0f} s" if eta is not None else ""
        note = f"  {self.text}" if self.text else ""
        sep = "," if counted else ""
        return f"{self.label}:{count}{share}{sep} {self.elapsed:.0f} s{tail}{note}"


def progress(label: str, total: int | None = None, console: Console | None = None, unit: str = "",
             every_s: float = 10.0, transient: bool = False) -> Progress:
    """A ``Progress`` on ``console`` (default: a stderr console, so a command's stdout stays its result)."""
    return Progress(label, total, console or make_console(stderr=True), unit, every_s, transient)


def working(text: str, console: Console | None = None, every_s: float = 10.0) -> Progress:
    """One step whose progress cannot be counted (an export, a model load, a library call): a running bar
    with the elapsed time on a terminal; on a log or pipe ``text: 20 s`` lines while it runs and ``text: done
    in N s`` at the end."""
    return progress(text, None, console, every_s=every_s)
