"""The one place every command passes through: ``GuardedCommand.invoke``.

Before a command's body runs, and around it:

1. **An output never eats an input** (``hydranet.outputs.check_output``): the command's ``--out/-o`` is
   compared with every path the command reads (its options and arguments that name existing files or
   folders, ``KIND:PATH`` specs, ``convert``'s source options), before anything is deleted or written.
2. **One writer per output**: commands that write a directory (a run, a dataset, a queue, a cache) hold
   ``hydranet.outputs.output_lock`` on it while they run; a second one fails at once naming the holder.
   (Under ``torchrun`` the ranks share the output: ``train`` locks its run directory itself, all ranks
   agreeing, and this lock is not taken.)
3. **Nothing half-written is left**: when the command fails, temporary files it created beside or in its
   output (``.tmp-*``, ``*.tmp``) are removed, and so is a file output that did not exist before.
4. **One error line** (``hydranet.cli.errors.cli_errors``): every exception becomes ``error: ...`` and exit
   1/2 (130/143 when interrupted), never a traceback.

Every command declares here whether its ``--out`` is a directory it writes into (locked) or a single file
(written atomically by its writer); ``tests/test_cli_convention.py`` checks that each command is listed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from hydranet.cli.errors import cli_errors, current_output
from hydranet.deploy import int8_path
from hydranet.outputs import check_output, is_write_failure, output_lock, temp_leftovers

# Commands whose --out is a directory they fill (a run, a dataset, a queue, a cache): locked while they run.
DIRECTORY_OUTPUTS = frozenset({"train", "demo", "generate", "convert", "infer", "predict", "mine", "label",
                               "vacation", "cache-features", "merge"})
# Commands whose --out is one file (JSON, HTML, PNG, ONNX), written through a temporary file and renamed.
FILE_OUTPUTS = frozenset({"eval", "gate", "report", "export", "quantize", "show", "view", "autolabel-quality"})
# Options that tell a command to delete what its output holds.
_REPLACING_OPTIONS = ("overwrite", "force", "retrain")
_OUTPUT_OPTIONS = ("out", "output")


def _default_output(name: str, params: dict[str, Any]) -> Path | None:
    """An output a command derives when ``--out`` is left out (``quantize``: ``<model>.int8.onnx``)."""
    if name == "quantize" and params.get("model") is not None:
        return int8_path(params["model"])
    return None


def _candidates(value: Any) -> Iterator[str]:
    """The strings in a parameter value that may name an input path: the value, and the parts of
    ``KIND:PATH`` / ``PATH:tasks`` specs."""
    if isinstance(value, list | tuple):
        for v in value:
            yield from _candidates(v)
        return
    if not isinstance(value, str | os.PathLike) or isinstance(value, bool):
        return
    text = os.fspath(value)
    if not text or "://" in text:
        return
    yield text
    if ":" in text:
        yield text.partition(":")[2]
        yield text.rpartition(":")[0]


def _input_paths(params: dict[str, Any], extra_args: Iterable[str] = ()) -> list[str]:
    """Every existing path a command was given, apart from its output."""
    found = []
    values = [v for k, v in params.items() if k not in _OUTPUT_OPTIONS]
    values += [a for a in extra_args if not a.startswith("--")]
    for value in values:
        for text in _candidates(value):
            if text and os.path.exists(text):
                found.append(text)
    return found


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


@contextmanager
def _guard_command(name: str, params: dict[str, Any], extra_args: Iterable[str] = ()) -> Iterator[None]:
    """Rules 1-3 of the module docstring around one command's body."""
    out = next((params[k] for k in _OUTPUT_OPTIONS if params.get(k) is not None), None)
    out = Path(out) if out is not None else _default_output(name, params)
    if out is None:
        yield
        return
    option = "--out"
    check_output(out, _input_paths(params, extra_args), any(bool(params.get(k)) for k in _REPLACING_OPTIONS), option)
    is_dir = name in DIRECTORY_OUTPUTS
    folder = out if is_dir else out.parent
    stem = None if is_dir else out.name.split(".")[0]
    before = temp_leftovers(folder, stem)
    existed = out.exists()
    started = time.time()
    token = current_output.set(lambda: _being_written(out, started) if is_dir else out)
    lock = output_lock(out) if is_dir and not _under_torchrun() else nullcontext()
    try:
        with lock:
            yield
    except BaseException as e:
        if is_write_failure(e) and not e.filename:  # a write() that failed names no file: name it here
            e.filename = str(current_output.get()())  # type: ignore[union-attr, misc]
        deliberate = isinstance(e, typer.Exit)  # the command ended itself (a failed check keeps its report)
        if not (deliberate and e.exit_code == 0):
            _clean(temp_leftovers(folder, stem) - before)
        if not deliberate and not is_dir and not existed and out.is_file():
            out.unlink(missing_ok=True)  # a file output this command began and did not finish
        raise
    finally:
        current_output.reset(token)


def _being_written(folder: Path, since: float) -> Path:
    """The file under ``folder`` written last since ``since`` (the one a full disk cut short), else ``folder``."""
    newest, when = folder, since
    for p in folder.rglob("*") if folder.is_dir() else []:
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if p.is_file() and mtime >= when:
            newest, when = p, mtime
    return newest


def _clean(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class GuardedCommand(TyperCommand):
    """Every hydranet command: its body runs inside ``cli_errors`` and ``_guard_command``."""

    def invoke(self, ctx: Any) -> Any:
        """click's ``invoke`` inside the guard: one error convention, outputs checked and locked."""
        with cli_errors(), _guard_command(self.name or "", dict(ctx.params), list(ctx.args)):
            return super().invoke(ctx)
