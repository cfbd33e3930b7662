"""One error convention for every command.

- exit 2: bad input — a config field, a data/model mismatch, a corrupt or missing checkpoint, shard
  or file, a run directory that is taken or already finished. The message names the file/field.
- exit 1: the work itself failed or a check did not pass (a threshold, a regression, training
  that could not continue because every step was non-finite).

``cli_errors()`` wraps a command body and turns the library's exceptions into one red ``error:``
line on stderr and the right exit code, so no command prints a traceback for bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from hydranet.checkpoint import CheckpointError, CheckpointWriteError
from hydranet.data.manifest import ShardError
from hydranet.setup import SetupMismatchError
from hydranet.train.config import ConfigError
from hydranet.train.run import RunLockedError
from hydranet.train.trainer import NonFiniteTrainingError

BAD_INPUT = 2
FAILED = 1


def fail(message: str, code: int = BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` to stderr and return the ``typer.Exit`` to raise."""
    from rich.console import Console
    from rich.markup import escape

    # Markup on so a terminal shows a red "error:" (rich drops the colour on a pipe); the message itself is
    # escaped so paths or keys with [brackets] print as they are.
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def bad_input_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean the user's input is wrong (exit 2)."""

    return (ConfigError, SetupMismatchError, CheckpointError, ShardError, RunLockedError, FileExistsError,
            FileNotFoundError, NotADirectoryError, ValueError, KeyError)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Map library exceptions to ``error: ...`` + exit 2 (bad input) or exit 1 (the work failed)."""

    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except (NonFiniteTrainingError, CheckpointWriteError) as e:
        raise fail(str(e), FAILED) from None
    except bad_input_types() as e:
        raise fail(str(e).strip("'\"") if isinstance(e, KeyError) else str(e), BAD_INPUT) from None
    except OSError as e:  # disk full, permissions: not the input's fault
        raise fail(str(e), FAILED) from None
