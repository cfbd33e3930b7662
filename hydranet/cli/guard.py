"""The one place every command passes through: ``GuardedCommand.invoke``.

Before a command's body runs, and around it:

1. **An output never eats an input** (``hydranet.outputs.check_output``): the command's ``--out/-o`` (and its
   side outputs: ``--report``, ``--json``) is compared with every path the command reads -- its options and
   arguments that name existing files or folders, ``KIND:PATH`` specs, ``convert``'s source options, and the
   paths named *inside* the files it was given (``_CONFIG_INPUTS``: a training config's datasets; a vacation
   pipeline's pool, model, train config, teacher, shadow graph and suites) -- before anything is deleted or
   written. A command that writes named parts below its output (``vacation``: each iteration's queue, labels,
   training run and export) declares them too, and no input may lie in a part that gets replaced. A report
   (``eval``, ``gate``, ``autolabel-quality``: JSON; ``report``: HTML) replaces an existing ``--out`` only when
   that file is a report the same command wrote (``_REPORTS``): ``eval -o notes.txt`` or ``-o frames.jsonl``
   is refused, the file untouched.
2. **One writer per output**: commands that write a directory (a run, a dataset, a queue, a cache) hold
   ``hydranet.outputs.output_lock`` on it while they run; a second one fails at once naming the holder.
   Under ``torchrun`` (``WORLD_SIZE`` > 1) the ranks of one job share the output: rank 0 holds the lock for
   the job, so a second job (or a single process) writing there is refused, and torchrun stops the refused
   job's other ranks with it. (``train`` also locks its run directory itself, all ranks agreeing.)
3. **Nothing half-written is left**: when the command fails, temporary files it created beside or in its
   output (``.tmp-*``, ``*.tmp``) are removed, and so is a file output that did not exist before, or a directory
   output it created and left empty, and the folders above the output that did not exist before and are left
   empty (the lock beside a directory output creates its parent: ``train -o a/b/c`` refused leaves no ``a/``).
   A directory output that is a file (or lies below one) is refused before the command runs.
4. **One error line** (``hydranet.cli.errors.cli_errors``): every exception becomes ``error: ...`` and exit
   1/2 (130/143 when interrupted), never a traceback; click's usage errors too (``GuardedGroup``).

Every command declares here whether its ``--out`` is a directory it writes into (locked) or a single file
(written atomically by its writer); ``tests/faults/test_faults_outputs.py`` walks the CLI and fails for a
command that is not a ``GuardedCommand``, declares no kind of output, or writes a directory without being
tried with its lock held.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup

from hydranet.checkpoint import read_state
from hydranet.cli.errors import cli_errors, current_output, fail, usage_error_line
from hydranet.deploy import int8_path
from hydranet.engine import load_pipeline, run_outputs
from hydranet.limits import set_max_image_pixels
from hydranet.model import ZOO_SCHEME, ZooError, find_pretrained
from hydranet.outputs import (
    OutputError,
    check_output,
    is_write_failure,
    newest_file,
    output_lock,
    temp_leftovers,
)
from hydranet.train import default_run_dir, load_config

# Commands whose --out is a directory they fill (a run, a dataset, a queue, a cache): locked while they run.
DIRECTORY_OUTPUTS = frozenset({"train", "demo", "generate", "convert", "infer", "predict", "mine", "label",
                               "vacation", "cache-features", "merge"})
# Commands whose --out is one file (JSON, HTML, PNG, ONNX), written through a temporary file and renamed.
FILE_OUTPUTS = frozenset({"eval", "gate", "report", "export", "quantize", "show", "view", "autolabel-quality"})
# Options that tell a command to delete what its output holds.
_REPLACING_OPTIONS = ("overwrite", "retrain")
_OUTPUT_OPTIONS = ("out", "output")
# Further files a command writes besides its --out (a report, a JSON of results): never one of its inputs.
_SIDE_OUTPUTS = {"convert": ("report",), "quantize": ("json_out",)}


def _default_output(name: str, params: dict[str, Any]) -> Path | None:
    """An output a command derives when ``--out`` is left out (``quantize``: ``<model>.int8.onnx``; ``train``:
    ``runs/<config stem>``), so it is checked and locked like one given."""
    if name == "quantize" and params.get("model") is not None:
        return int8_path(params["model"])
    if name == "train" and (params.get("config") is not None or params.get("from_ckpt") is not None):
        return default_run_dir(params.get("config"), params.get("from_ckpt"))
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
    if text.startswith(ZOO_SCHEME):  # a shipped model: its files in the package are an input like any checkpoint's
        try:
            yield str(find_pretrained(text).directory)
        except ZooError:  # an unknown name: the command says so itself
            pass
        return
    yield text
    if ":" in text:
        yield text.partition(":")[2]
        yield text.rpartition(":")[0]


def _dataset_paths(datasets: dict[str, dict[str, Any]]) -> list[str]:
    """The files and folders a training config's datasets (``data.datasets``: name -> source options) read
    (shards, roots, indices), as written."""
    return [v for ds in datasets.values() for k, v in ds.items()
            if k not in ("kind", "world", "frames") and isinstance(v, str)]


def _config_datasets(cfg: Any) -> dict[str, dict[str, Any]]:
    return {name: ds.options() for name, ds in cfg.data.datasets.items()}


def _train_inputs(params: dict[str, Any]) -> tuple[list[str], list[Path]]:
    """``train``/``demo``: the datasets its ``--config`` names."""
    if params.get("config") is None:
        return [], []
    return _dataset_paths(_config_datasets(load_config(params["config"], list(params.get("set_") or [])))), []


def _vacation_paths(params: dict[str, Any]) -> tuple[list[str], list[Path]]:
    """``vacation``: what its pipeline reads (and its train config's datasets), and the parts of the run
    directory it writes (``hydranet.engine.records.run_outputs``)."""
    pipe = load_pipeline(params["config"], list(params.get("set_") or []))
    inputs = pipe.inputs()
    try:
        if pipe.train_config:
            datasets = _config_datasets(load_config(pipe.train_config, list(pipe.train.overrides)))
        else:  # the model's own training config: read from its state.json, not by loading its weights
            state = read_state(pipe.model)
            datasets = ((state.get("config") or {}).get("data") or {}).get("datasets") or {}
        inputs += _dataset_paths(datasets)
    except Exception:  # noqa: BLE001 - a bad train config is reported by the command's own preflight
        pass
    return inputs, run_outputs(params["out"], params.get("iterations") or pipe.iterations)


# Commands that read paths named inside a file they were given, and write named parts below their output:
# ``name -> fn(params) -> (input paths, replaced outputs)``.
_CONFIG_INPUTS = {"train": _train_inputs, "demo": _train_inputs, "vacation": _vacation_paths}


def _declared_paths(name: str, params: dict[str, Any]) -> tuple[list[str], list[Path]]:
    """``_CONFIG_INPUTS[name](params)``; nothing when the file does not load (the command itself then reports it,
    naming the file and field)."""
    fn = _CONFIG_INPUTS.get(name)
    if fn is None:
        return [], []
    try:
        return fn(params)
    except Exception:  # noqa: BLE001 - the command's body reports a bad file with its own message
        return [], []


def _input_paths(params: dict[str, Any], extra_args: Iterable[str] = (), declared: Iterable[str] = (),
                 skip: Iterable[str] = ()) -> list[str]:
    """Every existing path a command was given (or that a file it was given names), apart from its outputs."""
    found = []
    values = [v for k, v in params.items() if k not in _OUTPUT_OPTIONS and k not in skip] + list(declared)
    values += [a for a in extra_args if not a.startswith("--")]
    for value in values:
        for text in _candidates(value):
            if text and os.path.exists(text):
                found.append(text)
    return found


def _lock_holder() -> bool:
    """Whether this process takes the output lock: always, except a ``torchrun`` rank other than 0 (rank 0
    holds it for the whole job)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return True
    return int(os.environ.get("RANK", "0") or 0) == 0


# The files hydranet's own datasets, runs, checkpoints, queues and zoo entries are made of: a command that writes one
# file (a JSON of results, a report, a picture) never replaces one of them, whatever folder it is in.
_STRUCTURE_FILES = frozenset({"manifest.json", "state.json", "latest.json", "config.yaml", "model.safetensors",
                              "optimizer.safetensors", "provenance.json", "labels.jsonl", "queue.jsonl",
                              "train_log.jsonl", "current.json"})


def _json_with(*key_sets: frozenset[str]) -> Callable[[bytes], bool]:
    """A test of a file's bytes: a JSON object holding every key of one of ``key_sets``."""
    def test(data: bytes) -> bool:
        try:
            tree = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(tree, dict) and any(keys <= tree.keys() for keys in key_sets)
    return test


# What a one-file command writes, told by an earlier output of it: an existing --out is replaced only when it is
# such a report (the same command's), never a user's file given as -o by mistake (notes.txt, a frames.jsonl, a
# settings.json, a web page). (export and quantize check their graphs themselves.)
_REPORTS: dict[str, tuple[str, Callable[[bytes], bool]]] = {
    "eval": ("a JSON report hydranet eval wrote",
             _json_with(frozenset({"checkpoint", "suites"}), frozenset({"checkpoint", "data"}))),
    "gate": ("a JSON report hydranet gate wrote", _json_with(frozenset({"baseline", "candidate", "passed"}))),
    "autolabel-quality": ("a JSON report hydranet autolabel-quality wrote",
                          _json_with(frozenset({"teacher", "single_frame", "clip_smoothed"}))),
    # hydranet.eval.report's page, by its title
    "report": ("an HTML report hydranet report wrote",
               lambda data: b"<title>hydranet evaluation report</title>" in data[:4096]),
}
_REPORT_MAX_BYTES = 64 << 20  # a report is far smaller: a larger file is not one (and is not read whole)


def _check_replaced_report(name: str, out: Path, option: str) -> None:
    """``OutputError`` naming ``option`` when ``out`` exists and is not a report ``name`` wrote (``_REPORTS``)."""
    if name not in _REPORTS or not out.is_file():
        return
    kind, written_by_it = _REPORTS[name]
    if out.stat().st_size <= _REPORT_MAX_BYTES and written_by_it(out.read_bytes()):
        return
    raise OutputError(f"{option} {out} exists and is not {kind}: it would be replaced; choose another file, or move "
                      "that one away")


def _check_not_below_a_file(out: Path, option: str) -> None:
    """``OutputError`` naming ``option`` when a folder above ``out`` is a file (a raw OS error otherwise)."""
    above = next((p for p in out.parents if p.is_file()), None)
    if above is not None:
        raise OutputError(f"{option} {out}: {above} is a file, not a folder")


def _check_file_output(out: Path, option: str) -> None:
    """Before a one-file command runs (rule 1): its ``--out`` may not be a directory, a path below a file, or a
    file named like a part of a dataset, run, checkpoint, queue or zoo entry (``_STRUCTURE_FILES``): ``OutputError``
    naming it, instead of a raw OS error after the work or a dataset whose manifest was replaced."""
    if out.is_dir():
        raise OutputError(f"{option} {out} is a directory; {option} names the file to write")
    _check_not_below_a_file(out, option)
    if out.name in _STRUCTURE_FILES and out.exists():
        raise OutputError(f"{option} {out} is part of a hydranet dataset, run or checkpoint ({out.name}): writing "
                          "there would replace it; choose another file")


def _check_directory_output(out: Path, option: str) -> None:
    """Before a command that writes a directory runs (rule 1): its ``--out`` may not be a file or lie below one:
    ``OutputError`` naming it, instead of a raw OS error (``[Errno 17] File exists``) from its first ``mkdir``."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out}: is a file; give a folder")
    _check_not_below_a_file(out, option)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first: what writing below ``folder`` creates."""
    missing = []
    for p in (folder, *folder.absolute().parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first; one never created is passed over) while each is an empty directory: never
    one that holds anything, nor any above it."""
    for p in folders:
        if not p.exists() and not p.is_symlink():
            continue
        if p.is_symlink() or not p.is_dir() or any(p.iterdir()):
            return
        try:
            p.rmdir()
        except OSError:  # filled or removed meanwhile by another process: leave it and everything above
            return


@contextmanager
def _guard_command(name: str, params: dict[str, Any], extra_args: Iterable[str] = ()) -> Iterator[None]:
    """Rules 1-3 of the module docstring around one command's body."""
    out = next((params[k] for k in _OUTPUT_OPTIONS if params.get(k) is not None), None)
    out = Path(out) if out is not None else _default_output(name, params)
    if out is None:
        yield
        return
    option = "--out"
    side = _SIDE_OUTPUTS.get(name, ())
    declared, parts = _declared_paths(name, params)
    inputs = _input_paths(params, extra_args, declared, side)
    check_output(out, inputs, any(bool(params.get(k)) for k in _REPLACING_OPTIONS), option)
    for part in parts:  # replaced each time the command runs again: nothing read may lie inside
        check_output(part, inputs, True, f"{option} {out}: its part")
    for key in side:
        if params.get(key) is not None:
            flag = f"--{key.removesuffix('_out')}"
            check_output(params[key], inputs, False, flag)
            if Path(params[key]).expanduser().resolve() == out.expanduser().resolve():
                raise OutputError(f"{flag} {params[key]} is also the command's --out: one would overwrite the other; "
                                  "choose another file")
    is_dir = name in DIRECTORY_OUTPUTS
    if is_dir:
        _check_directory_output(out, option)
    else:
        _check_file_output(out, option)
        _check_replaced_report(name, out, option)
    folder = out if is_dir else out.parent
    stem = None if is_dir else out.name.split(".")[0]
    before = temp_leftovers(folder, stem)
    existed = out.exists()
    missing = _missing_folders(folder)  # removed again, when left empty, if the command fails
    started = time.time()
    token = current_output.set(lambda: newest_file(out, started) if is_dir else out)
    lock = output_lock(out) if is_dir and _lock_holder() else nullcontext()
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
        # a directory output this command created and left empty (cache-features on a bad shard), and the folders
        # above the output it created (the lock's: a refused `train -o a/b/c` left a/b/)
        _remove_empty(missing)
        raise
    finally:
        current_output.reset(token)


def _clean(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class GuardedGroup(TyperGroup):
    """The ``hydranet`` group: a usage error anywhere (a bad option value, a missing or unknown option, of the
    group or of a command) is one ``error:`` line and exit 2 (``hydranet.cli.errors.usage_error_line``), not
    click's three lines. ``hydranet`` alone still prints the help."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """click's ``make_context`` (parses the group's own options) with usage errors on one line."""
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        """click's ``invoke`` (parses and runs the command) with usage errors on one line."""
        with _one_line_usage_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as e:
        raise fail(usage_error_line(e), e.exit_code) from None


class GuardedCommand(TyperCommand):
    """Every hydranet command: its body runs inside ``cli_errors`` and ``_guard_command``."""

    def invoke(self, ctx: Any) -> Any:
        """click's ``invoke`` inside the guard: one error convention, outputs checked and locked. The image limit
        (``hydranet --max-image-pixels N``, else ``HYDRANET_MAX_IMAGE_PIXELS``) is applied first, here, where a
        command runs: a bad variable is one error line, exit 2, and ``--help`` (which never gets here) works
        whatever the environment holds."""
        with cli_errors():
            set_max_image_pixels(ctx.find_root().params.get("max_image_pixels"))
            with _guard_command(self.name or "", dict(ctx.params), list(ctx.args)):
                return super().invoke(ctx)
