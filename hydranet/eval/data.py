"""Score a trained model on any dataset — a user's shards, nuScenes, KITTI, BDD100K, their own ``frames`` — with
every task's own metric: ``hydranet eval CHECKPOINT --data SOURCE``.

Suites (``suite.py``) judge a model on synthetic scenarios against thresholds; this is the other half: the
numbers on *your* data, with no thresholds. The data is opened for the model's setup (``open_dataset(...,
setup=)``: a source resizes to its image size, maps classes onto its vocabulary and makes BEV labels on its
grid) and checked against it once (``hydranet.setup.check_fits``, the one data-vs-model check; the BEV grid only
for the tasks whose labels lie on it, ``hydranet.tasks.grid_raster_tasks``) before a frame is read. Labels may be
partial, as everywhere in hydranet: a task is scored on the frames that carry its label, and a task whose label
no frame carries is reported as unlabelled, never as a zero. A model with the video memory is streamed frame by
frame in dataset order (a new scene resets its memory).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from hydranet.datasets import dataset_setup, renders_world
from hydranet.eval.loop import EvalFrame, Evaluator, dataset_batches, predictor_of
from hydranet.setup import SetupMismatchError, check_fits
from hydranet.tasks import grid_raster_tasks


@dataclass
class DatasetEval:
    """What ``evaluate_dataset`` returns: ``frames`` scored, per task the frames carrying its label
    (``labelled_frames``) and its metrics (``metrics``: ``{task: {metric: value}}``, headline first; only tasks
    with at least one labelled frame), why each undefined (NaN) metric is undefined (``undefined``: ``{task:
    {metric: reason}}``, the metric's ``undefined_reason``; ``NO_GROUND_TRUTH`` when the frames hold nothing it
    is measured on), and the tasks no frame labels (``unlabelled``)."""

    frames: int
    labelled_frames: dict[str, int]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (an undefined metric is null in ``metrics``, its reason in
        ``undefined``)."""
        return {"frames": self.frames, "labelled_frames": self.labelled_frames, "metrics": self.metrics,
                "undefined": self.undefined, "unlabelled": self.unlabelled}


@torch.no_grad()
def evaluate_dataset(model: Any, dataset: Dataset, tasks: list[str] | None = None, frames: int | None = None,
                     batch_size: int = 4, device: torch.device | str | None = None, source: str = "--data",
                     model_name: str = "the model", on_batch: Callable[[int], None] | None = None) -> DatasetEval:
    """Score ``model`` (a ``HydraNet``) on the first ``frames`` frames (default: all) of ``dataset`` (opened for
    the model's setup: ``hydranet.datasets.open_dataset(spec, setup=model.setup)``).

    ``tasks``: heads to score (default: all of the model's). ``on_batch(frames)`` is called after every batch.
    Raises ``ValueError`` naming an unknown task, ``SetupMismatchError`` naming ``source`` when the data does not
    fit the model (image size, rig, class vocabulary: ``check_fits``; the BEV grid, naming them, when a task's
    labels lie on it: ``grid_raster_tasks`` — ``objects3d``'s boxes are in metres and scored on
    any grid) and ``TypeError`` for a dataset that reports no setup."""
    names = list(model.task_objects) if tasks is None else list(tasks)
    unknown = [t for t in names if t not in model.task_objects]
    if unknown:
        raise ValueError(f"tasks {unknown} are not heads of {model_name} ({list(model.task_objects)})")
    chosen = {t: model.task_objects[t] for t in names}
    try:
        setup = dataset_setup(dataset)
        # Only labels rasterised on the BEV grid need the model's grid: 3D boxes are in metres, scored on any grid.
        check_fits(setup, model.setup, source, labels=[task.label for task in chosen.values()],
                   grid_tasks=grid_raster_tasks(chosen), remedy="leave them out (--tasks)", model_name=model_name)
    except SetupMismatchError as e:
        if not renders_world(dataset):
            raise
        # A world opened for the model renders its setup unless the world file declares one of its own.
        raise SetupMismatchError(f"{e}; a world opened for the model renders the model's setup unless its file "
                                 "declares a `setup` of its own: leave that out") from None
    n = len(dataset) if frames is None else min(frames, len(dataset))  # type: ignore[arg-type]
    labelled: Counter[str] = Counter()

    def count(frame: EvalFrame) -> None:
        for t, target in frame.targets.items():
            labelled[t] += target is not None

    # The memory needs the frames in order, one sequence at a time (the Streamer resets at a new scene).
    temporal = predictor_of(model, chosen).is_temporal
    was_training = model.training
    model.eval()
    try:
        evaluator = Evaluator(model, chosen, on_frame=count, device=device, stream=temporal)
        for batch in dataset_batches(Subset(dataset, range(n)), batch_size=1 if temporal else batch_size):
            evaluator.step(batch)
            if on_batch is not None:
                on_batch(len(batch))
        metrics = evaluator.compute()
    finally:
        model.train(was_training)
    counts = {t: int(labelled[t]) for t in sorted(chosen)}
    scored = [t for t in sorted(chosen) if counts[t] > 0]
    return DatasetEval(frames=n, labelled_frames=counts, metrics={t: metrics[t] for t in scored},
                       unlabelled=[t for t in sorted(chosen) if counts[t] == 0],
                       undefined={t: evaluator.metrics[t].undefined(metrics[t]) for t in scored})
