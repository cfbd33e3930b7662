"""``hydranet vacation``: Operation Vacation — the data engine's loop as one resumable command.

Per iteration ``RUN/iter_NNN/`` runs the stages in order; each stage ends by writing its record
``RUN/iter_NNN/<stage>.json`` atomically (temp file, fsync, rename):

    mine     queue of frames to label from the pool (frames labelled earlier are excluded)
    label    oracle or auto labels → a new shard directory ``labels/`` (nothing else copied)
    dataset  ``dataset_manifest.json``: the iteration's dataset = the base training datasets + every
             iteration's ``labels/`` shards so far — a manifest of shards, versioned per iteration
    train    fine-tune from the current model on that dataset, or (mode ``heads``) train only the
             named heads from a feature cache of it (``hydranet.train.subgraph``)
    eval     current and candidate on every suite, on the same frames; gate rows per metric
    gate     pass/fail from the eval's rows (``hydranet.eval.gate``), naming suite/task/metric
    export   ONNX + manifest of the candidate (only when the gate passed)
    promote  ``RUN/current.json`` → the candidate (or a record saying why not)

Kill -9 at any point and run the same command again: stages with a record are skipped; the
first without one runs again from its start (a half-written ``labels/`` is replaced, training
resumes from its last checkpoint). ``RUN/history.jsonl`` and ``RUN/history.html`` are rebuilt
from the records after every iteration.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydranet.engine import stages
from hydranet.engine.history import write_history
from hydranet.engine.pipeline import Pipeline
from hydranet.engine.records import STAGES, atomic_json


class Vacation:
    """The loop over iterations and stages; ``log`` receives one line per event."""

    def __init__(self, pipe: Pipeline, out: str | Path, log: Callable[[str], None] = print) -> None:
        # absolute: every path a record stores must mean the same file when the run is resumed from elsewhere
        self.pipe, self.out, self.log = pipe, Path(out).absolute(), log
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.out / "pipeline.json"
        cfg = pipe.model_dump(mode="json")
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            changed = sorted(k for k in cfg if k not in ("iterations", "path") and old.get(k) != cfg[k])
            if changed and self.finished_stages():
                raise ValueError(
                    f"{self.out} was started with a different pipeline (fields {changed} differ) and holds "
                    f"finished stages ({', '.join(self.finished_stages()[:3])}...) that must not be mixed with "
                    f"another pipeline's. To proceed: resume with the original pipeline file, run the new one "
                    f"into a new --out (e.g. {self.out}_2), or delete {self.out} to start over")
            if changed:  # nothing finished yet (e.g. the first stage failed): the new pipeline takes over
                log(f"{self.out}: no stage had finished; starting over with the changed pipeline ({changed})")
        atomic_json(cfg_path, cfg)

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
        return self.out / f"iter_{it:03d}"

    def run(self) -> list[dict[str, Any]]:
        """Run every unfinished stage of every iteration in order, writing each record atomically (so a
        killed run resumes at the first missing stage), and the history after each iteration; returns its rows."""

        rows = []
        for it in range(1, self.pipe.iterations + 1):
            for stage in STAGES:
                if self.record(it, stage) is not None:
                    continue
                t0 = time.perf_counter()
                self.log(f"iteration {it}: {stage} ...")
                rec = getattr(stages, f"stage_{stage}")(self, it)
                rec["seconds"] = round(time.perf_counter() - t0, 2)
                rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                rec["pid"] = os.getpid()
                atomic_json(self.iter_dir(it) / f"{stage}.json", rec)
                self.log(f"iteration {it}: {stage} done in {rec['seconds']} s" +
                         (f" — {rec['summary']}" if rec.get("summary") else ""))
            rows = write_history(self)
        return rows


def read_current(out: str | Path) -> dict[str, Any] | None:
    """``OUT/current.json`` with its paths made absolute (they are stored relative to ``OUT``), or None when
    nothing was promoted yet. ``ValueError`` names the file when it is unreadable or names a missing path."""
    out = Path(out).absolute()
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
