"""What every writer of a run, dataset or file keeps to: an output never eats an input, one writer at a
time, and no half-written file under the real name.

- ``check_output(out, inputs, replacing)``: refuses (``OutputError``, exit 2) an output that **is** one of
  the inputs, lies **inside** a sealed input (a checkpoint, a run's ``checkpoints/``, a dataset with a
  ``manifest.json``, a feature cache), or **contains** an input while the command is told to replace what
  is there (``--overwrite``/``--force``) -- checked before anything is deleted or written.
- ``output_lock(out)``: an exclusive ``filelock`` on ``<parent>/.<name>.lock`` for as long as a command
  writes ``out``; a second writer fails at once naming the holder's pid (``OutputLockedError``, exit 2).
  The OS releases the lock when its holder dies, so a killed run never leaves a stale lock (only an empty
  file, reused by the next writer); a finished one removes its lock file.
- ``atomic_path(path)``: yields a temporary name beside ``path`` for a writer to fill; renamed over ``path``
  only when the block succeeds, removed when it fails. ``write_error(e, path)`` turns an ``OSError`` into one
  line naming the file ("disk full ..."), raised as ``OutputWriteError`` (exit 1).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "OutputLockedError", "OutputWriteError", "atomic_path", "check_output", "hold_lock",
           "is_write_failure", "output_lock", "temp_leftovers", "write_bytes_atomic", "write_error"]

_LOCK_SUFFIX = ".lock"


class OutputError(ValueError):
    """An output that would overwrite, or be written inside, one of the command's own inputs."""


class OutputLockedError(OutputError):
    """Another process is writing the same output; the message names its pid and the lock file."""


class OutputWriteError(RuntimeError):
    """Writing an output failed (disk full, permissions); the message names the file. Nothing half-written
    is left under the output's name."""


# ---- inputs vs the output -----------------------------------------------------------------------


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _sealed_region(path: Path) -> Path | None:
    """The part of an input directory nothing may be written into: a checkpoint directory, a run's
    ``checkpoints/``, a shard dataset, a feature cache. None for a plain folder (only the folder itself
    and what it contains are protected, by ``check_output``'s other two rules)."""
    if not path.is_dir():
        return None
    if (path / "state.json").is_file() or (path / "manifest.json").is_file() or (path / "cache.json").is_file():
        return path
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.name == "checkpoints" and (path / "latest.json").is_file():
        return path
    return None


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies below it."""
    return a == b or b in a.parents


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], replacing: bool = False,
                 option: str = "--out") -> None:
    """Refuse ``out`` when writing it could destroy one of ``inputs`` (existing paths; others are ignored).

    Raises ``OutputError`` naming both paths when ``out`` is an input, lies inside a sealed input
    (``_sealed_region``), or contains an input while ``replacing`` (the command deletes what ``out`` holds)."""
    target = _resolved(out)
    for raw in inputs:
        src = _resolved(raw)
        if not src.exists():
            continue
        if target == src:
            raise OutputError(f"{option} {out} is also an input of this command ({raw}): writing it would destroy "
                              "what is being read; choose another output")
        sealed = _sealed_region(src)
        if sealed is not None and _inside(target, sealed):
            part = f" ({sealed})" if sealed != src else ""
            raise OutputError(f"{option} {out} lies inside the input {raw}{part}: writing there would change the "
                              "input; choose an output outside it")
        if replacing and _inside(src, target):
            raise OutputError(f"{option} {out} contains the input {raw}: replacing it would delete that input; "
                              "choose another output")


# ---- one writer at a time -----------------------------------------------------------------------


def lock_file(out: str | os.PathLike) -> Path:
    """The lock of output ``out``: ``<parent>/.<name>.lock`` (beside it, so deleting or replacing ``out``
    never removes the lock a writer holds)."""
    p = Path(out).expanduser().absolute()
    return p.parent / f".{p.name}{_LOCK_SUFFIX}"


@contextmanager
def hold_lock(lock: Path, what: str, error: type[Exception] = OutputLockedError) -> Iterator[None]:
    """Hold ``lock`` (``filelock``, non-blocking) while the block runs; ``error`` names the holder's pid
    (kept in ``<lock>.pid``: the lock file itself is truncated by every process that tries it) when another
    process holds it."""
    from filelock import FileLock, Timeout

    lock.parent.mkdir(parents=True, exist_ok=True)
    pid_file = lock.with_name(lock.name + ".pid")
    fl = FileLock(str(lock))
    try:
        fl.acquire(timeout=0)
    except Timeout:
        try:
            holder = pid_file.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise error(f"{what} is in use by another hydranet process (pid {holder}, lock {lock}); wait for it to "
                    "finish or choose another --out") from None
    try:
        try:
            pid_file.write_text(f"{os.getpid()}\n")
        except OSError:  # informational only: a full disk is reported by the writer, naming its own file
            pid_file.unlink(missing_ok=True)
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        # Unlinked while still held, so no lock file stays behind: a process that opened this inode meanwhile
        # sees it unlinked once it gets the lock and retries on the path (filelock >= 4 checks st_nlink).
        lock.unlink(missing_ok=True)
        fl.release()


@contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of output ``out`` (``lock_file``) for the block; ``OutputLockedError`` when taken."""
    with hold_lock(lock_file(out), str(out)):
        yield


# ---- no half-written files ----------------------------------------------------------------------

_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large for "
         "this filesystem or ulimit", errno.EROFS: "read-only filesystem", errno.EACCES: "permission denied",
         errno.EPERM: "permission denied"}


def _real_name(path: str | os.PathLike) -> str:
    """The file a temporary name stands for: ``.tmp-model.onnx-123`` -> ``model.onnx``, ``x.json.tmp`` ->
    ``x.json`` (so an error names the file the user asked for)."""
    p = Path(path)
    name = p.name
    if name.startswith(".tmp-"):
        name = name[len(".tmp-"):]
        head, _, tail = name.rpartition("-")
        name = head if tail.isdigit() and head else name
    elif name.endswith(".tmp"):
        name = name[:-len(".tmp")].lstrip(".")
        parts = name.split(".")
        if len(parts) > 2 and (parts[-1].isdigit() or len(parts[-1]) == 8):  # mkstemp / pid infixes
            name = ".".join(parts[:-1])
    return str(p.with_name(name))


def write_error(e: OSError, path: str | os.PathLike | None) -> str:
    """One line for a failed write: what happened (``disk full`` ...) and the file it happened to (the
    error's own file name, else ``path``)."""
    what = _FULL.get(e.errno or 0) or (e.strerror or str(e) or type(e).__name__)
    target = _real_name(e.filename) if e.filename else (str(path) if path is not None else None)
    if not target:
        return what
    verb = "" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "could not write "
    return f"{what}: {verb}{target}"


def is_write_failure(e: BaseException) -> bool:
    """An ``OSError`` that says the disk, quota or filesystem refused a write (not a missing input)."""
    return isinstance(e, OSError) and e.errno in _FULL


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield ``.tmp-<name>-<pid>`` beside ``path`` for a writer; rename it over ``path`` when the block
    succeeds (after an fsync), remove it when the block fails. An ``OSError`` becomes ``OutputWriteError``
    naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(write_error(e, path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``atomic_path`` (all or nothing, naming the file on failure)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def temp_leftovers(folder: Path, stem: str | None = None) -> set[Path]:
    """Temporary files a writer leaves while it works (``.tmp-*``, ``*.tmp``) in ``folder`` and one level
    below; with ``stem``, only those whose name contains it."""
    if not folder.is_dir():
        return set()
    found = set()
    for pattern in (".tmp-*", "*.tmp", "*/.tmp-*", "*/*.tmp", ".*.tmp", "*/.*.tmp"):
        for p in folder.glob(pattern):
            if stem is None or stem in p.name:
                found.add(p)
    return found
