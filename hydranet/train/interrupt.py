"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, say how to resume.

As Lightning does (its ``SignalConnector``), the first SIGINT or SIGTERM only *requests* a stop: the trainer
asks ``stop_requested()`` between steps (never inside one, so weights and optimiser moments are saved
consistent), leaves its loop, writes its checkpoint as at the end of a run, and ``run_training`` raises
``TrainingInterrupted`` naming that checkpoint and the command that resumes it. A second signal while that
happens aborts at once (the previous checkpoint is intact: saves are atomic).

Exit codes follow the shell's convention for death by a signal: 130 after SIGINT, 143 after SIGTERM.
Under ``torchrun`` every rank polls the same flag all-reduced, so all ranks stop at the same step, and a
worker whose launcher died (``kill -9`` of torchrun) requests the stop itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

import torch

T = TypeVar("T")

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving; ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM). ``quiet``: the
    command ends with the code without an error line (a torchrun rank other than 0: rank 0's line says it all)."""

    def __init__(self, message: str, exit_code: int, quiet: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.quiet = quiet


def workers_ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of the training loaders: a Ctrl-C or SIGTERM sent to the whole process
    group (a terminal, SLURM, Kubernetes) must not kill the workers under the step the trainer is finishing
    (torch's worker handler would, and its SIGCHLD error would then land anywhere in that step). The main
    process stops and ends its workers; a worker whose parent died exits by itself (torch's watchdog)."""
    for s in EXIT_CODES:
        signal.signal(s, signal.SIG_IGN)


@contextmanager
def ending_workers(batches: Iterator[T]) -> Iterator[Iterator[T]]:
    """Yield ``batches`` (a ``DataLoader``'s iterator) and end its worker processes when the block is left,
    by the end of training or by an exception.

    Why: workers started with ``workers_ignore_stop_signals`` ignore SIGTERM, and an exception leaving the
    loop (a sample that cannot be decoded, a non-finite loss) keeps the iterator alive in its traceback, so
    the iterator is not collected before the interpreter exits; ``multiprocessing``'s exit handler would
    then SIGTERM the workers and wait for them forever. ``_shutdown_workers`` is what the iterator's own
    ``__del__`` calls (torch ``_MultiProcessingDataLoaderIter``): it tells each worker to stop and joins it.
    A single-process iterator (``num_workers=0``) has no workers and nothing is done.
    """
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


_received: list[int] = []  # signals received while a ``stop_on_signals`` block runs


def received_signal() -> int | None:
    """The signal that requested the stop (``signal.SIGINT``/``SIGTERM``), or None."""
    return _received[0] if _received else None


def stop_requested(device: torch.device | str | None = None) -> bool:
    """Whether a stop was requested on this rank, or on any rank under ``torch.distributed``."""
    local = bool(_received)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(local)], device=device or "cpu")
        torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)
    return local


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM sets the stop flag instead of killing the process; the
    second raises ``KeyboardInterrupt`` at once. Outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in EXIT_CODES}

    def handler(signum: int, frame: FrameType | None) -> None:
        if _received:  # asked twice: stop now
            for s, h in previous.items():
                signal.signal(s, h)
            raise KeyboardInterrupt
        _received.append(signum)

    _received.clear()
    for s in EXIT_CODES:
        signal.signal(s, handler)
    done = threading.Event()
    watcher = _watch_launcher(done)
    try:
        yield
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
        for s, h in previous.items():
            signal.signal(s, h)
        _received.clear()


def _watch_launcher(done: threading.Event, every_s: float = 1.0) -> threading.Thread | None:
    """Under torchrun, a thread that requests a stop (as SIGTERM would) once the launcher that started this
    worker is gone: a ``kill -9`` of torchrun's agent leaves its workers running on, and they would train every
    remaining step and keep writing checkpoints with nobody to collect them. None outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()

    def watch() -> None:
        while not done.wait(every_s):
            if os.getppid() != parent:  # re-parented: the launcher died
                if not _received:
                    _received.append(signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="torchrun launcher watch", daemon=True)
    thread.start()
    return thread
