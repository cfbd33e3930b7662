"""Rank-0 training output: TensorBoard scalars, a JSON-lines log and a rich progress bar.

TensorBoard tags: ``loss/<task>`` (per-task loss, averaged over the logging window and all ranks),
``loss/total`` (the balanced objective), ``weight/<task>`` (current balancing weight), ``lr``,
``grad_norm``, ``skipped_steps``, ``samples_per_s`` and ``eval/<task>/<metric>``.
``tensorboard --logdir <out>/tb`` shows them.

A resumed run continues both logs from the step it resumes at: ``trim_log`` drops the JSON lines of later steps
(which the stopped attempt trained but never checkpointed, and the resumed run trains again) and TensorBoard
purges their events (``SummaryWriter(purge_step=...)``), so each step is logged once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hydranet.console import is_live, make_console
from hydranet.json_files import dumps
from hydranet.outputs import atomic_path

_SHORT = {"detection2d": "det2d", "traffic_light": "light", "drivable": "drive", "lanes": "lanes", "depth": "depth",
         "bev_semantic": "bev", "objects3d": "obj3d"}


class TrainLogError(ValueError):
    """``train_log.jsonl`` holds a line that is not a log record before its last line; the message names the file
    and the line."""


def _record_step(line: bytes) -> int | None:
    """The ``step`` of one ``train_log.jsonl`` line (a JSON object with an integer ``step``: every record
    ``TrainLogger`` writes, window and eval alike), or None when the line is not such a record."""
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def trim_log(path: Path, step: int) -> bool:
    """Keep the records of ``path`` (a ``train_log.jsonl``) up to and including ``step`` and drop the later ones,
    in place: the kept lines go to a temporary file beside it that replaces it (``outputs.atomic_path``), so a
    process killed midway leaves the file as it was. A missing file is left missing.

    A last line that is not a record (the stopped attempt was killed while writing it) is dropped: returns True
    then; so is any line after the first record past ``step`` (all dropped). Any other line that is not a record
    raises ``TrainLogError`` naming the file and the line number."""
    if not path.is_file():
        return False
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():  # the newline ending the last record
        lines.pop()
    steps = [_record_step(line) for line in lines]
    total = len(lines)
    partial = bool(steps) and steps[-1] is None
    if partial:
        lines, steps = lines[:-1], steps[:-1]
    # Records are in step order: from the first one past ``step`` on, every line is dropped, a damaged one too.
    # A damaged line before it is refused even right after a record at ``step``: a step's eval record follows its
    # training record, so that line may be one to keep.
    tail = next((i for i, s in enumerate(steps) if s is not None and s > step), len(steps))
    lines, steps = lines[:tail], steps[:tail]
    for number, s in enumerate(steps, 1):
        if s is None:
            raise TrainLogError(f"{path}: line {number} is not a training log record (a JSON object with an "
                                "integer \"step\"); a resumed run keeps this log up to the step it resumes at: "
                                "fix or delete that line (or move the file away) and resume again")
    if len(lines) != total:  # every line left is a record at or before ``step``
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"".join(line + b"\n" for line in lines))
    return partial


class TrainLogger:
    """Rank-0 training output under ``out_dir``: TensorBoard (``tb/``), ``train_log.jsonl`` and a progress bar
    (plain lines when the console is not live). With ``enabled=False`` (other ranks) every call is a no-op.
    Use as a context manager: leaving it closes the files.

    ``resume_step``: the step a resumed run continues from (0 for a run resumed before its first checkpoint);
    both logs then keep what the earlier attempts logged up to that step and drop the rest (``trim_log``, and
    TensorBoard's ``purge_step``). None for a new run, whose logs start empty."""

    def __init__(self, out_dir: Path, tasks: list[str], total_steps: int, enabled: bool = True,
                 progress: bool = True, console: Console | None = None, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.tasks = tasks
        self.total = total_steps
        self.out_dir = out_dir
        self.console = console or make_console(stderr=True)
        self.writer = None
        self.progress: Progress | None = None
        self.losses: dict[str, float] = {}
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        log = out_dir / "train_log.jsonl"
        if resume_step is not None and trim_log(log, resume_step):
            self.console.print(f"note: {log}: its last line was cut short (the earlier attempt stopped while "
                               "writing it) and is dropped", soft_wrap=True)
        self.jsonl = open(log, "a")  # noqa: SIM115 - closed in __exit__
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events an earlier attempt wrote here at steps > resume_step
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=purge)
        if progress and is_live(self.console):  # in a log file a live bar prints nothing: plain lines instead
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.description}"), console=self.console)
            self.bar = self.progress.add_task("", total=total_steps)

    def __enter__(self) -> TrainLogger:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.stop()
        self.writer.close()
        self.jsonl.close()

    def start(self, step: int) -> None:
        """Set the progress bar to ``step`` (a resumed run starts part-way); the ETA counts from here."""
        self._t0, self._step0 = time.perf_counter(), step
        if self.progress is not None:
            self.progress.update(self.bar, completed=step)

    def advance(self, step: int, out: dict[str, Any]) -> None:
        """Move the bar to ``step`` showing the last logged per-task losses; ``out`` is ``train_step``'s result
        (a skipped step is flagged)."""
        if self.progress is None:
            return
        parts = [f"{_SHORT.get(t, t)} {v:.3f}" for t, v in self.losses.items()]
        skipped = " [red]skipped" if out.get("skipped") else ""
        self.progress.update(self.bar, completed=step, description=" ".join(parts) + skipped)

    def log(self, record: dict[str, Any]) -> None:
        """Write one logging-window record (``step``, ``lr``, ``grad_norm``, ``loss``, ``task_loss``, ``weights``,
        ``skipped_steps``, ``samples_per_s``, and ``muon_lr`` when Muon's kernels have their own lr) to TensorBoard
        and the JSON-lines log; non-finite scalars are left out of TensorBoard."""
        if not self.enabled:
            return
        step = record["step"]
        self.losses = dict(record["task_loss"])
        w = self.writer
        for t, v in record["task_loss"].items():
            w.add_scalar(f"loss/{t}", v, step)
        for t, v in record["weights"].items():
            w.add_scalar(f"weight/{t}", v, step)
        for key in ("loss", "lr", "muon_lr", "grad_norm", "skipped_steps", "samples_per_s"):
            if isinstance(record.get(key), (int, float)) and math.isfinite(record[key]):
                w.add_scalar("loss/total" if key == "loss" else key, record[key], step)
        self.jsonl.write(dumps(record, indent=None) + "\n")
        self.jsonl.flush()
        if self.progress is None:  # no live bar (CI logs, pipes, tests): one complete line per logging window
            losses = " ".join(f"{_SHORT.get(t, t)}={v:.4f}" for t, v in record["task_loss"].items())
            muon = f" muon_lr={record['muon_lr']:.2e}" if "muon_lr" in record else ""
            line = (f"step {step}/{self.total} lr={record['lr']:.2e}{muon} {losses} "
                    f"skipped={record['skipped_steps']} {record['samples_per_s']:.1f} samples/s{self._eta(step)}")
            self.console.print(line, soft_wrap=True)

    def _eta(self, step: int) -> str:
        """``, 95 s, ETA 310 s``: elapsed since ``start`` and the time left at the rate so far."""
        t0, step0 = getattr(self, "_t0", None), getattr(self, "_step0", 0)
        if t0 is None or step <= step0:
            return ""
        elapsed = time.perf_counter() - t0
        return f", {elapsed:.0f} s, ETA {elapsed * (self.total - step) / (step - step0):.0f} s"

    def log_eval(self, step: int, results: dict[str, Any]) -> None:
        """Write ``{task: {metric: value}}`` eval results at ``step`` as ``eval/<task>/<metric>`` scalars and a
        JSON line, and print each task's first metric."""
        if not self.enabled:
            return
        for task, metrics in results.items():
            if isinstance(metrics, dict):
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self.writer.add_scalar(f"eval/{task}/{k}", v, step)
        self.jsonl.write(dumps({"eval": results, "step": step}, indent=None) + "\n")
        self.jsonl.flush()
        # Each task's headline metric by name (``depth abs_rel=0.270``): a bare number says nothing.
        headline = "  ".join(f"{t} {next(iter(m))}={next(iter(m.values())):.3f}" for t, m in results.items()
                             if isinstance(m, dict) and m)
        self.console.print(f"[cyan]eval step {step}[/] {headline}")
