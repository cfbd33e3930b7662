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

import os
import time
from collections.abc import Callable
from typing import Any

from hydranet.engine import stages
from hydranet.engine.history import write_history
from hydranet.engine.records import STAGES, VacationRun, atomic_json


class Vacation(VacationRun):
    """The loop over iterations and stages of a run directory (``VacationRun``)."""

    def run(self, on_record: Callable[[int, str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run every unfinished stage of every iteration in order, writing each record atomically (so a
        killed run resumes at the first missing stage), and the history after each iteration; returns its rows.
        ``on_record(iteration, stage, record)`` is called after each record a stage of this call wrote (the CLI
        prints the gate's table from it)."""

        rows = []
        for it in range(1, self.pipe.iterations + 1):
            done = [stage for stage in STAGES if self.record(it, stage) is not None]
            if done:  # a resumed run says what it keeps instead of redoing it
                self.log(f"iteration {it}: {', '.join(done)} finished in an earlier run (kept, not redone)")
            for stage in STAGES:
                if stage not in done:
                    self._run_stage(it, stage, on_record)
                if stage == "mine" and self._exhausted(it):  # nothing new to label: the later stages are moot
                    break
            rows = write_history(self)
            if self._exhausted(it):
                self.log(f"iteration {it}: the pool is exhausted: the mine stage queued no frame that earlier "
                         "iterations had not labelled, so nothing is labelled, trained or promoted and the run stops "
                         "here; the current model stays (a larger or new pool gives the next iteration frames)")
                break
        return rows

    def _run_stage(self, it: int, stage: str, on_record: Callable[[int, str, dict[str, Any]], None] | None) -> None:
        """Run ``stage`` of iteration ``it`` and write its record atomically, with its time and pid."""
        t0 = time.perf_counter()
        self.log(f"iteration {it}: {stage} ...")
        rec = stages.RUNNERS[stage](self, it)
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["pid"] = os.getpid()
        atomic_json(self.iter_dir(it) / f"{stage}.json", rec)
        self.log(f"iteration {it}: {stage} done in {rec['seconds']} s" +
                 (f" — {rec['summary']}" if rec.get("summary") else ""))
        if on_record is not None:
            on_record(it, stage, rec)

    def _exhausted(self, it: int) -> bool:
        """Whether iteration ``it`` mined no frame (every frame worth labelling was labelled before): its later
        stages would fine-tune on the base frames alone and could promote a model no new frame taught."""
        mined = self.record(it, "mine")
        return mined is not None and mined.get("picked") == 0

