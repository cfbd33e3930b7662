"""The one way hydranet makes a rich ``Console``: live and coloured on a terminal, plain otherwise.

When the stream is not a terminal (CI logs, ``| cat``, ``> file``) rich would assume 80 columns and
wrap or squeeze tables (a result column collapsed to zero width, numbers split over lines). Here
such a console has no width limit and no colour codes, so every table row and log line is printed
complete on one line; live progress bars are replaced by periodic plain lines by their callers
(``is_live(console)``).
"""

from __future__ import annotations

import sys

from rich.console import Console

PLAIN_WIDTH = 10_000  # "unlimited": rows are as wide as their content


def make_console(stderr: bool = False) -> Console:
    """A ``Console`` on stdout (or stderr) that never wraps or truncates when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PLAIN_WIDTH, no_color=True, highlight=False, soft_wrap=True)


def is_live(console: Console) -> bool:
    """Whether live displays (progress bars, spinners) can redraw on this console."""
    return console.is_terminal and not console.is_dumb_terminal


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False
