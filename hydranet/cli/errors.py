"""One error convention for every command, applied in one place.

- exit 2: bad input — a config field, a data/model mismatch, a corrupt or missing checkpoint, shard
  or file, an output that would overwrite an input, an output another process is writing, an input
  over a limit (``hydranet.limits``). The message names the file/field.
- exit 1: the work itself failed or a check did not pass (a threshold, a regression, training that
  could not continue, a full disk, a network that does not answer).
- exit 130 / 143: interrupted by SIGINT / SIGTERM (``train`` saves a checkpoint first and says how to resume).

``cli_errors()`` turns every exception into one ``error:`` line on stderr and the right exit code, so no
command prints a traceback (``HYDRANET_DEBUG=1`` shows it for an unexpected error). Every command runs
inside it (``hydranet.cli.guard.GuardedCommand``); commands may also nest it around a part of their body.
click's usage errors (a bad option value, a missing or unknown option) become one such line too
(``usage_error_line``, applied by ``hydranet.cli.guard.GuardedGroup``), exit 2: ``error: --frames: Input
should be greater than or equal to 1`` instead of click's usage line, help hint and ``Error:`` line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import typer
from pydantic import ValidationError
from typer._click.exceptions import BadParameter, MissingParameter, UsageError

from hydranet.checkpoint import CheckpointError, CheckpointWriteError
from hydranet.config_errors import format_validation_error
from hydranet.data import NetworkError, ShardError
from hydranet.limits import LimitError
from hydranet.outputs import OutputError, OutputWriteError, is_write_failure, write_error
from hydranet.setup import SetupMismatchError
from hydranet.train import ConfigError, NonFiniteTrainingError, RunLockedError, TrainingInterrupted

BAD_INPUT = 2
FAILED = 1
_INTERRUPTED = 130

# Where the command running now was writing (set by the guard: its file output, or the newest file of its
# directory output), named when a write fails without a file name.
current_output: ContextVar[Callable[[], Path] | None] = ContextVar("current_output", default=None)


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined by ``; `` (a multi-line library message stays one error line)."""
    lines = [line.strip() for line in str(message).splitlines()
             if line.strip() and not line.strip().startswith("For further information visit")]  # pydantic's links
    return "; ".join(lines)


def _option_name(e: BadParameter) -> str | None:
    """The option or argument a ``BadParameter`` is about, as the user typed it (``--frames``, ``CHECKPOINT``);
    None when it names none (its message then names the file and field itself)."""
    hint = e.param_hint
    if hint is None and e.param is not None:
        opts = list(getattr(e.param, "opts", None) or [])
        hint = next((o for o in opts if o.startswith("--")), None) or (opts[0] if opts else None)
        if hint is None or getattr(e.param, "param_type_name", "") == "argument":
            hint = (e.param.name or "value").upper()
    if isinstance(hint, list | tuple):
        hint = "/".join(str(h) for h in hint)
    return str(hint).strip("'\"") if hint else None


def usage_error_line(e: UsageError) -> str:
    """One line for click's usage error ``e``: ``OPTION: message`` for a bad value, click's own sentence (and
    where the help is) for a missing or unknown option."""
    if isinstance(e, BadParameter) and not isinstance(e, MissingParameter):
        option = _option_name(e)
        named = option is None or e.message.startswith(option)  # the message names its option itself
        return e.message if named else f"{option}: {e.message}"
    where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
    return f"{e.format_message()}{where}"


def fail(message: str, code: int = BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` (one line) to stderr and return the ``typer.Exit`` to raise."""
    from rich.console import Console
    from rich.markup import escape

    # Markup on so a terminal shows a red "error:" (rich drops the colour on a pipe); the message itself is
    # escaped so paths or keys with [brackets] print as they are.
    # emoji off: a source such as `nosuchkind:x:` would print as an emoji (rich reads `:x:` as a code)
    Console(stderr=True).print(f"[red]error:[/red] {escape(one_line(message))}", soft_wrap=True, highlight=False,
                               emoji=False)
    return typer.Exit(code)


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean the user's input is wrong (exit 2)."""

    return (ConfigError, SetupMismatchError, CheckpointError, ShardError, RunLockedError, OutputError, LimitError,
            FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, KeyError)


# torch's DataLoader re-raises a worker's exception as the same type with this text (``ExceptionWrapper``):
# the worker's whole traceback, whose last lines are the exception as ``module.Type: message``.
_WORKER_TRACEBACK = re.compile(r"Caught (\w+) in DataLoader worker process (\d+)\.\s*\n"
                               r"Original Traceback \(most recent call last\):\n(.*)", re.DOTALL)


def _from_loader_worker(message: str) -> str:
    """``message`` with a DataLoader worker's traceback replaced by the worker's own error message and the
    worker named (``...: member 'cam.main.npz' cannot be decoded (...) (in DataLoader worker 0)``); any other
    message unchanged."""
    match = _WORKER_TRACEBACK.search(message)
    if match is None:
        return message
    name, worker, traceback_text = match.groups()
    raised = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", traceback_text, re.MULTILINE))
    if not raised:
        return message
    own = traceback_text[raised[-1].end():].strip()
    return f"{message[:match.start()]}{own} (in DataLoader worker {worker})"


def describe(e: BaseException) -> tuple[str, int]:
    """``(message, exit code)`` of any exception a command lets through; see the module docstring. An error
    raised in a DataLoader worker reads as the worker's own message (``_from_loader_worker``)."""
    message, code = _describe(e)
    return _from_loader_worker(message), code


def _describe(e: BaseException) -> tuple[str, int]:
    if isinstance(e, TrainingInterrupted):
        return str(e), e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", _INTERRUPTED
    if isinstance(e, NetworkError | NonFiniteTrainingError | CheckpointWriteError | OutputWriteError):
        return str(e), FAILED
    if isinstance(e, ValidationError):  # a pydantic model validated outside a loader that names the file
        return format_validation_error(e, e.title, sep="; "), BAD_INPUT
    if isinstance(e, RecursionError):
        return "input nested too deep to read (refused)", BAD_INPUT
    if is_write_failure(e):
        where = current_output.get()
        return write_error(e, where() if where is not None else None), FAILED  # type: ignore[arg-type]
    if type(e).__name__ == "DecompressionBombError":  # PIL's guard, for an Image.open without our own check
        return f"{e} (raise the limit with `hydranet --max-image-pixels N`)", BAD_INPUT
    if any(c.__name__ in ("DistError", "DistBackendError", "DistNetworkError") for c in type(e).__mro__) or (
            isinstance(e, RuntimeError) and "gloo" in str(e)):
        # torch.distributed's errors: another rank of the job died, was killed or stopped answering.
        rank = os.environ.get("RANK")
        return (f"rank {rank}: " if rank is not None else "") + (
            f"a peer process of this torchrun job died or stopped answering ({one_line(str(e))[:200]}); the "
            "first error above, from the rank that failed, says why. A training run resumes from its last "
            "checkpoint with the same torchrun command and --resume"), FAILED
    if isinstance(e, KeyError) and " " not in str(e).strip("'\""):
        # A bare missing key ("error: lane") is a lookup hydranet got wrong, not a message written for the user:
        # every KeyError raised for bad input says what was looked up and where.
        return (f"internal error: KeyError: {e} (this is a hydranet bug; HYDRANET_DEBUG=1 shows the "
                "traceback)"), FAILED
    if isinstance(e, _bad_input_types()):
        return (str(e).strip("'\"") if isinstance(e, KeyError) else str(e)), BAD_INPUT
    if isinstance(e, OSError):  # an OS failure that is not the input's fault
        where = f"{e.filename}: " if e.filename and str(e.filename) not in str(e) else ""
        return f"{where}{e}", FAILED
    return (f"internal error: {type(e).__name__}: {e} (this is a hydranet bug; HYDRANET_DEBUG=1 shows the "
            "traceback)"), FAILED


@contextmanager
def cli_errors() -> Iterator[None]:
    """Map every exception to ``error: ...`` and its exit code (``describe``); typer's own exceptions (usage
    errors, ``typer.Exit``) pass through."""

    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except (Exception, KeyboardInterrupt) as e:
        if os.environ.get("HYDRANET_DEBUG") == "1" and not isinstance(e, KeyboardInterrupt):
            raise
        if isinstance(e, TrainingInterrupted) and e.quiet:  # another rank's error line says it
            raise typer.Exit(e.exit_code) from None
        message, code = describe(e)
        raise fail(message, code) from None
