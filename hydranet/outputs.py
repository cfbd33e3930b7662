"""What every writer of a run, dataset or file keeps to: an output never eats an input, one writer at a
time, and no half-written file under the real name.

- ``check_output(out, inputs, replacing)``: refuses (``OutputError``, exit 2) an output that **is** one of
  the inputs, lies **inside** a sealed input (a checkpoint, a run's ``checkpoints/``, a dataset with a
  ``manifest.json``, a feature cache), or **contains** an input while the command is told to replace what
  is there (``--overwrite``) -- checked before anything is deleted or written.
- ``output_lock(out)``: an exclusive ``filelock`` on ``<parent>/.<name>.lock`` for as long as a command
  writes ``out``; a second writer fails at once naming the holder's pid (``OutputLockedError``, exit 2).
  The OS releases the lock when its holder dies, so a killed run never leaves a stale lock (only an empty
  file, reused by the next writer); a finished one removes its lock file.
- ``atomic_path(path)``: yields a temporary name beside ``path`` for a writer to fill; renamed over ``path``
  only when the block succeeds, removed when it fails. ``StagedDirectory(out, overwrite, marker)`` (and
  ``staged_directory``, its ``with`` form) does the same for a whole output directory (``predict``, ``infer``,
  and every shard dataset: ``ShardWriter``, so ``convert``, ``generate``, ``label``): an existing non-empty
  ``out`` is refused unless ``overwrite``, and even then replaced only when it holds ``marker`` (the
  command's own earlier output), and only once the new one is complete.
  ``write_error(e, path)`` turns an ``OSError`` into one line naming the file ("disk full ..."), raised as
  ``OutputWriteError`` (exit 1).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "OutputLockedError", "OutputWriteError", "StagedDirectory", "atomic_path", "check_output",
           "hold_lock", "fsync_path", "is_write_failure", "newest_file", "output_lock", "staged_directory",
           "temp_leftovers", "write_bytes_atomic", "write_error"]

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
        fsync_path(tmp)
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


def newest_file(folder: Path, since: float) -> Path:
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


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data, or a directory's entries (a rename into it), to the disk. A directory fsync the
    filesystem does not support (``EINVAL``, ``ENOTSUP``) is skipped: the rename is atomic all the same."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if not (os.path.isdir(path) and e.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


class StagedDirectory:
    """A whole output directory written out of sight and put in place at once: the one mechanism behind
    ``staged_directory`` (a ``with`` block: ``predict``, ``infer``, ``label``) and ``ShardWriter`` (opened,
    fed, then closed or aborted: ``convert``, ``generate``).

    Constructing it checks ``out`` and creates ``path``, an empty hidden directory ``.tmp-<name>-<pid>``
    beside ``out``, for the writer to fill. ``commit()`` fsyncs its files and renames it to ``out`` (the old
    ``out``, if any, deleted only then); ``abandon(error)`` deletes it and leaves ``out`` as it was, so nothing
    half-written ever carries the output's name. What a writer killed mid-way (kill -9) left beside ``out``
    is put right first: its stage is deleted, and an old ``out`` it had moved aside but not yet replaced is
    moved back.

    Refused before anything is written (``OutputError``, naming ``out`` and ``flag``), in this order: an
    existing ``out`` that is a file; a non-empty one that does not hold ``marker`` (the file that shows it is
    this command's own earlier output: nothing else is ever replaced); when ``owned`` is given (``owned(out)``:
    the relative paths the earlier output itself records, read from its ``marker``), one that also holds any
    other file (a user's own file is never deleted by a replace, even one named like an output:
    ``frame_0007.png`` beside a one-frame ``predictions.json``); and any non-empty one unless ``overwrite``.
    An empty directory is simply replaced. A write that fails (disk full, permissions) raises
    ``OutputWriteError`` naming the file under ``out`` it was meant for. A symlinked ``out`` is staged and
    replaced where it points."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, marker: str | None = None,
                 option: str = "--out", flag: str = "--overwrite",
                 owned: Callable[[Path], set[str]] | None = None):
        given = Path(out)
        out = Path(os.path.realpath(given.expanduser())) if given.is_symlink() else given.expanduser().absolute()
        _recover_stages(out)
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise OutputError(f"{option} {given} is a file, not a directory; choose another {option}")
            if any(out.iterdir()):
                earlier = marker is None or (out / marker).is_file()
                if not earlier:
                    raise OutputError(f"{option} {given} already exists and holds no {marker}, so it is not an earlier "
                                      f"output of this command (which {flag} would replace): choose another {option}")
                foreign = _not_owned(out, owned, marker) if owned is not None else []
                if foreign:
                    shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more"
                                                                      if len(foreign) > 3 else "")
                    raise OutputError(f"{option} {given} also holds files this command did not write ({shown}); "
                                      f"{flag} would delete them: move them or choose another {option}")
                if not overwrite:
                    raise OutputError(f"{option} {given} already exists and is not empty; pass {flag} to replace "
                                      f"it or choose another {option}")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.given, self.out = given, out
        self.path = out.with_name(f"{_STAGE_PREFIX}{out.name}-{os.getpid()}")
        self._old = self.path.with_name(self.path.name + _OLD_SUFFIX)
        self._started = time.time()
        try:
            self.path.mkdir()
        except BaseException as e:
            self.abandon(e)
            raise

    def commit(self) -> None:
        """Fsync every file of the stage and rename it to ``out`` (replacing the old ``out`` only now)."""
        try:
            for p in [*self.path.rglob("*"), self.path]:
                if p.is_file() or p.is_dir():
                    fsync_path(p)
            if self.out.exists():
                os.replace(self.out, self._old)
                try:
                    os.replace(self.path, self.out)
                except OSError:
                    os.replace(self._old, self.out)
                    raise
                shutil.rmtree(self._old, ignore_errors=True)
            else:
                os.replace(self.path, self.out)
            fsync_path(self.out.parent)
        except BaseException as e:
            self.abandon(e)
            raise

    def abandon(self, error: BaseException | None = None) -> None:
        """Delete the stage; ``out`` stays as it was. When ``error`` (what ended the writer) is a failed write
        (disk full, permissions), raise ``OutputWriteError`` naming the file under ``out`` it was meant for;
        otherwise return and let the caller re-raise ``error``."""
        if isinstance(error, OSError) and is_write_failure(error):
            target = Path(error.filename) if error.filename else newest_file(self.path, self._started)
            if target == self.path or self.path in target.parents:  # the file the user asked for, not the copy
                target = self.given / target.relative_to(self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            raise OutputWriteError(write_error(OSError(error.errno, error.strerror, str(target)), target)) from None
        shutil.rmtree(self.path, ignore_errors=True)


_STAGE_PREFIX = ".tmp-"
_OLD_SUFFIX = ".old"


def _recover_stages(out: Path) -> None:
    """Put right what a ``StagedDirectory`` of ``out`` whose process is gone (or is this one: a reused pid)
    left beside it: the stage is deleted; an old ``out`` moved aside (``.old``) is moved back when no ``out``
    took its place, else deleted. A live writer's stage is left alone."""
    prefix = f"{_STAGE_PREFIX}{out.name}-"
    for p in out.parent.glob(glob.escape(prefix) + "*"):
        pid = p.name[len(prefix):].removesuffix(_OLD_SUFFIX)
        if not pid.isdigit() or (int(pid) != os.getpid() and _process_alive(int(pid))):
            continue
        if p.name.endswith(_OLD_SUFFIX) and not (out.exists() or out.is_symlink()):
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _not_owned(out: Path, owned: Callable[[Path], set[str]], marker: str | None) -> list[Path]:
    """Files under ``out`` (relative paths, sorted) that the earlier output does not record (``owned(out)``; an
    unreadable record owns only ``marker``, the record itself)."""
    try:
        recorded = owned(out)
    except (OSError, ValueError, KeyError, TypeError):
        recorded = set()
    recorded |= {marker} if marker is not None else set()
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() or p.is_symlink())
    return [p for p in files if p.as_posix() not in recorded]


@contextmanager
def staged_directory(out: str | os.PathLike, overwrite: bool = False, marker: str | None = None,
                     option: str = "--out", flag: str = "--overwrite",
                     owned: Callable[[Path], set[str]] | None = None) -> Iterator[Path]:
    """Yield the empty stage of ``StagedDirectory(out, overwrite, marker, option, flag, owned)`` for the block
    to fill; commit it when the block succeeds, abandon it when the block fails (any exception, Ctrl-C
    included). The refusals and errors are ``StagedDirectory``'s."""
    staged = StagedDirectory(out, overwrite, marker, option, flag, owned)
    try:
        yield staged.path
    except BaseException as e:
        staged.abandon(e)
        raise
    staged.commit()


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
