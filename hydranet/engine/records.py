"""What a vacation run writes and reads: the run directory (``VacationRun``: its pipeline, the stage records of
each iteration, the promoted model), the stage order and crash-safe JSON records (write, fsync, rename).

The stages and the history page read a run through it; ``vacation.py`` (the loop) runs the stages over it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydranet.engine.pipeline import Pipeline
from hydranet.json_files import dumps

STAGES = ("mine", "label", "dataset", "train", "eval", "gate", "export", "promote")
# The first stage that reads each pipeline field (a changed field is safe while no stage from it on has finished).
_FIRST_READER = {"pool": "mine", "model": "mine", "mine": "mine", "label": "label", "train_config": "dataset",
                 "train": "dataset", "eval": "eval", "export": "export"}
# The files a run keeps at its top level (beside its iter_NNN/ folders).
_RUN_FILES = ("pipeline.json", "current.json", "history.jsonl", "history.html")


def _iteration_dir(out: str | Path, it: int) -> Path:
    """The directory of iteration ``it`` of the run in ``out`` (``<out>/iter_NNN``)."""
    return Path(out) / f"iter_{it:03d}"


def run_outputs(out: str | Path, iterations: int) -> list[Path]:
    """What a run of ``iterations`` iterations writes into ``out``: its top-level files and one folder per
    iteration (queue, labels, dataset manifest, training run, cache, export), each replaced when its stage runs
    again. Nothing the pipeline reads may lie in them (``hydranet.cli.guard``)."""
    return [Path(out) / name for name in _RUN_FILES] + [_iteration_dir(out, it) for it in range(1, iterations + 1)]


def atomic_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: temporary file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(dumps(data))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VacationRun:
    """A vacation run directory: its pipeline (``pipeline.json``), the stage records of each iteration and the
    promoted model (``current.json``); ``log`` receives one line per event. Raises ``ValueError`` when ``out``
    holds finished stages of another pipeline."""

    def __init__(self, pipe: Pipeline, out: str | Path, log: Callable[[str], None] = print) -> None:
        # resolved: every path a record stores must mean the same file when the run is resumed from elsewhere
        self.pipe, self.out, self.log = pipe, Path(out).resolve(), log
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.out / "pipeline.json"
        cfg = pipe.model_dump(mode="json")
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            was = old.pop("run_dir", None)  # where the run was written (absent in runs of older versions)
            if was and Path(was).resolve() != self.out and self.finished_stages():
                raise ValueError(
                    f"{cfg_path}: run_dir: this run was written in {was} and its records (and the training runs "
                    f"inside it) name files there; move it back to {was} to resume it, or start a new run (another "
                    "--out)")
            changed = sorted(k for k in cfg if k not in ("iterations", "path") and old.get(k) != cfg[k])
            # A field no finished stage has read yet may change (a suite typo found at the eval stage, fixed before
            # any eval ran): every stage from the first one that reads it on must be unfinished, in every iteration.
            done = {Path(r).stem for r in self.finished_stages()}
            readers = {s for k in changed for s in STAGES[STAGES.index(_FIRST_READER.get(k, STAGES[0])):]}
            if changed and done and not readers & done:
                log(f"{self.out}: {changed} changed before any stage that reads them finished: the run goes on "
                    "with the changed pipeline")
                changed = []
            if changed and self.finished_stages():
                raise ValueError(
                    f"{self.out} was started with a different pipeline (fields {changed} differ) and holds "
                    f"finished stages ({', '.join(self.finished_stages()[:3])}...) that must not be mixed with "
                    f"another pipeline's. To proceed: resume with the original pipeline file (and --set), run the "
                    f"new one into a new --out (e.g. {self.out}_2), or delete {self.out} to start over")
            if changed:  # nothing finished yet (e.g. the first stage failed): the new pipeline takes over
                log(f"{self.out}: no stage had finished; starting over with the changed pipeline ({changed})")
        atomic_json(cfg_path, {**cfg, "run_dir": str(self.out)})

    # ---- state ---------------------------------------------------------------------------
    def finished_stages(self) -> list[str]:
        """The stage records already written (``iter_NNN/<stage>.json``), in order."""
        return [str(p.relative_to(self.out)) for p in sorted(self.out.glob("iter_*/*.json")) if p.stem in STAGES]

    def current(self) -> dict[str, Any]:
        """``current.json`` (the promoted checkpoint, its ONNX and iteration), or the pipeline's starting model.
        Its paths are stored relative to the run directory (``promote``) and returned absolute."""
        cur = read_current(self.out)
        return cur if cur is not None else {"checkpoint": self.pipe.model, "onnx": None, "iteration": 0}

    def run_relative(self, path: str | Path | None) -> str | None:
        """``path`` relative to the run directory when inside it (what ``current.json`` stores), else absolute."""
        if path is None:
            return None
        p = Path(path).absolute()
        return str(p.relative_to(self.out)) if self.out in p.parents else str(p)

    def record(self, it: int, stage: str) -> dict[str, Any] | None:
        """The JSON record of ``stage`` in iteration ``it``, or None when that stage has not finished."""
        p = self.iter_dir(it) / f"{stage}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def iter_dir(self, it: int) -> Path:
        """The directory of iteration ``it`` (``<out>/iter_NNN``)."""
        return _iteration_dir(self.out, it)


def describe_current(cur: dict[str, Any], path: Callable[[str], str] = str) -> str:
    """``current.json`` (or the pipeline's starting model) in words: ``promoted in iteration 2: checkpoint P ·
    ONNX Q`` or ``the starting model: checkpoint P``; ``path`` formats each path (the history page wraps it in
    ``<code>``), the console prints it as is."""
    onnx = f" · ONNX {path(str(cur['onnx']))}" if cur.get("onnx") else ""
    it = cur.get("iteration", 0)
    return (f"{'the starting model' if not it else f'promoted in iteration {it}'}: checkpoint "
            f"{path(str(cur.get('checkpoint')))}{onnx}")


def read_current(out: str | Path) -> dict[str, Any] | None:
    """``OUT/current.json`` with its paths made absolute (they are stored relative to ``OUT``), or None when
    nothing was promoted yet. ``ValueError`` names the file when it is unreadable or names a missing path."""
    out = Path(out).resolve()
    p = out / "current.json"
    if not p.exists():
        return None
    try:
        cur = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: unreadable ({e})") from None
    for key in ("checkpoint", "onnx"):
        value = cur.get(key)
        if not value:
            continue
        path = Path(value)
        if not path.is_absolute():
            # written relative to the run directory; a run of an older hydranet wrote it relative to the
            # directory it was started from
            path = out / path if (out / path).exists() or not path.exists() else path.absolute()
        if not path.exists():
            raise ValueError(f"{p}: {key} {value} does not exist (looked in {out}); the promoted model is gone")
        cur[key] = str(path)
    return cur
