"""Run a trained checkpoint (the PyTorch model) over any dataset — any rig, any source — and draw its predictions.

``hydranet infer`` runs an exported ONNX graph, whose rig (camera names, count, image size) is fixed at export;
``hydranet predict`` is its checkpoint counterpart for data from another rig: a 1-camera BDD100K dash cam, the
6-camera nuScenes rig, a fleet's own ``frames``. The HydraNet takes K and ``T_ego_from_cam`` per sample, so the
same weights run on any camera count (a rig with fewer cameras than the model's is padded with cameras marked
failed, ``camera_valid``, which fusion ignores); frames are resized to the model's input size (K rescaled,
``hydranet.data.convert.resize_sample``) and run one at a time (rigs may differ between frames); a model with
the video memory streams them in order, its memory carried within a scene and reset at the next. With ``track``,
the ``objects3d`` boxes are tracked over each scene's frames (``hydranet.eval.tracking``, as ``infer --track`` and
``eval --track`` do): each box gets a ``track_id`` and its track's velocity and score.

Per frame it writes ``frame_0000.png`` (cameras + BEV panel, every task drawn by its own ``draw``; with
``ground_truth`` the frame's labels too) and, for dense outputs, ``frame_0000.npz``; ``predictions.json`` lists
the decoded objects per frame, as ``infer`` does. The directory appears whole or not at all
(``hydranet.outputs.staged_directory``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hydranet.checkpoint import load_model
from hydranet.data import Batch, Sample, collate, resize_sample
from hydranet.datasets import dataset_setup, open_data_option, renders_world
from hydranet.deploy import PREDICTIONS, recorded_predictions, write_frame
from hydranet.eval import TRACKED_TASK, Evaluator, TrackerOptions
from hydranet.json_files import dumps
from hydranet.outputs import staged_directory
from hydranet.setup import Setup, SetupMismatchError, check_grid, check_vocabularies
from hydranet.tasks import Task, grid_raster_tasks
from hydranet.viz import Views

__all__ = ["check_labels_drawable", "model_batch", "own_cameras", "run_predict"]


def _padded_batch(sample: Sample, num_cameras: int) -> tuple[Batch, Tensor | None]:
    """A 1-sample batch with the model's camera count: a rig with fewer cameras is padded with cameras marked
    failed (``camera_valid`` False: fusion ignores them, their head outputs are dropped), so a model built for
    8 cameras runs on a 1-camera dash cam without pretending the missing cameras saw anything."""
    n = len(sample.camera_names)
    if n > num_cameras:
        raise ValueError(f"{sample.scene_id}: {n} cameras, more than the model's {num_cameras} (setup.rigs)")
    if n == num_cameras:
        return collate([sample]), None
    pad = num_cameras - n
    padded = Sample(images=torch.cat([sample.images, sample.images.new_zeros(pad, *sample.images.shape[1:])]),
                    intrinsics=torch.cat([sample.intrinsics, sample.intrinsics[:1].expand(pad, 3, 3)]),
                    T_ego_from_cam=torch.cat([sample.T_ego_from_cam, sample.T_ego_from_cam[:1].expand(pad, 4, 4)]),
                    T_world_from_ego=sample.T_world_from_ego, timestamp=sample.timestamp, scene_id=sample.scene_id,
                    frame_index=sample.frame_index,
                    camera_names=(*sample.camera_names, *(f"_absent{i}" for i in range(pad))))
    valid = torch.zeros(1, num_cameras, dtype=torch.bool)
    valid[0, :n] = True
    return collate([padded]), valid


def model_batch(sample: Sample, setup: Setup) -> tuple[Batch, Tensor | None]:
    """The 1-sample batch and ``camera_valid`` (None: every camera) a model of ``setup`` takes for ``sample``: one
    of the model's rigs as it is, a rig with fewer cameras padded with failed ones (``_padded_batch``). Pass
    ``sample`` without labels when they are only drawn (labels on another BEV grid would not collate)."""
    own = len(sample.camera_names) in setup.camera_counts()  # one of the model's rigs: no padding
    return (collate([sample]), None) if own else _padded_batch(sample, max(setup.camera_counts()))


def own_cameras(value: Any, n: int, space: str) -> Any:
    """Decoded output restricted to the sample's own ``n`` cameras (drops the padding's)."""
    if space != "camera":
        return value
    if isinstance(value, Tensor):
        return value[:n]
    if isinstance(value, dict) and "camera" in value:
        keep = value["camera"] < n
        return {k: v[keep] if isinstance(v, Tensor) and v.shape[:1] == keep.shape else v for k, v in value.items()}
    return value


def check_labels_drawable(dataset: Any, setup: Setup, tasks: dict[str, Task], source: str, model_name: str,
                          remedy: str = "leave out the ground truth or that task (--tasks)") -> None:
    """``SetupMismatchError`` naming ``source`` when the data's labels of ``tasks`` cannot be drawn beside the
    predictions of a model of ``setup`` (``predict --ground-truth``, ``view --model``): BEV labels on another grid
    (for a BEV task), or object labels whose class vocabulary differs (a class id would be drawn with another
    class's name). Data that declares neither passes. The rig and image size may differ: predictions are drawn
    on each frame's own cameras. ``remedy``: what the message tells the user to do instead."""
    try:
        data = dataset_setup(dataset)
    except TypeError:  # a dataset that reports no setup: its labels are checked per frame
        return
    # Only labels rasterised on the grid (a BEV task's dense label, bev_semantic's map) need the model's grid: 3D
    # boxes are in metres in the ego frame and draw beside predictions on any grid.
    check_grid(data, setup, source, grid_raster_tasks(tasks), remedy, model_name)
    try:
        check_vocabularies(data, setup, sorted({t.label for t in tasks.values()}), source, model_name)
    except SetupMismatchError as e:
        raise SetupMismatchError(f"{e}: its labels cannot be drawn beside the predictions; convert the data with the "
                                 f"model's classes (hydranet convert --model-classes), or {remedy}") from None


@torch.inference_mode()
def run_predict(checkpoint: str | Path, data: Any, out: str | Path, frames: int | None = None,
                tasks: list[str] | None = None, ground_truth: bool = False, scale: int = 2,
                on_frame: Callable[[int], None] | None = None, overwrite: bool = False,
                track: bool = False) -> dict[str, Any]:
    """Run ``checkpoint`` over ``data`` (anything ``hydranet.datasets.open_dataset`` takes) into the directory
    ``out``; returns the JSON written (``predictions.json``).

    ``out`` is filled through ``hydranet.outputs.staged_directory``: an existing non-empty ``out`` is refused
    (``OutputError``) unless ``overwrite``, which replaces only an earlier ``predict``/``infer`` output, and
    only once every frame is written; a failure leaves no ``out`` (or the old one untouched).
    ``tasks``: heads to run (default: all of the model's). ``track``: stream the frames in order and track the
    ``objects3d`` boxes (module docstring). Raises ``ValueError`` naming an unknown task, or for ``track`` when
    ``objects3d`` is not among the heads run, ``CheckpointError`` for a bad checkpoint, the dataset's own errors
    for bad data and ``OutputWriteError`` naming the file when a write fails."""
    with staged_directory(out, overwrite, PREDICTIONS, owned=recorded_predictions) as stage:
        return _predict_into(stage, checkpoint, data, frames, tasks, ground_truth, scale, on_frame, track)


def _opened(data: Any, setup: Setup) -> Any:
    """``data`` opened as it is (predict runs any rig, size and vocabulary), or, for a world, rendering the model's
    ``setup`` (unless the world declares its own), as ``eval --data`` and ``infer`` do: the defaults would be
    another rig, grid and size; other sources are not resized or remapped here. An error opening it names
    ``--data`` first (``open_data_option``)."""
    dataset = open_data_option(data)
    return open_data_option(data, setup=setup) if renders_world(dataset) else dataset


def _predict_into(out: Path, checkpoint: str | Path, data: Any, frames: int | None, tasks: list[str] | None,
                  ground_truth: bool, scale: int, on_frame: Callable[[int], None] | None,
                  track: bool) -> dict[str, Any]:
    """``run_predict``'s body, writing into ``out`` (the staging directory)."""
    model, _ = load_model(checkpoint)
    names = list(model.task_objects) if tasks is None else list(tasks)
    unknown = [t for t in names if t not in model.task_objects]
    if unknown:
        raise ValueError(f"tasks {unknown} are not heads of this model ({list(model.task_objects)})")
    if track and TRACKED_TASK not in names:  # before: the evaluator's own words ("it needs stream=True ...")
        why = (f"--tasks {names} leaves it out" if TRACKED_TASK in model.task_objects else
               f"this model has no {TRACKED_TASK} head ({list(model.task_objects)})")
        raise ValueError(f"--track: tracking follows {TRACKED_TASK} boxes over a scene's frames, and {why}")
    tracking = TrackerOptions() if track else None
    stream = model.is_temporal or track
    # Built before any frame is opened: the evaluator refuses tracking when objects3d is not a head it runs.
    predictor = Evaluator(model, {name: model.task_objects[name] for name in names}, score=False, stream=stream,
                          tracking=tracking)
    dataset = _opened(data, model.setup)
    if ground_truth:
        check_labels_drawable(dataset, model.setup, {t: model.task_objects[t] for t in names}, f"--data {data}",
                              f"checkpoint {checkpoint}")
    n = len(dataset) if frames is None else min(frames, len(dataset))
    # A model with the video memory streams the frames in order, its memory reset at each new scene (as `eval`
    # and `infer` do): frame by frame from an empty memory it would be a single-frame model. So do tracks.
    records = []
    for k in range(n):
        sample = resize_sample(dataset[k], model.setup.image_size)
        # the model's input: no labels (they are only drawn, with --ground-truth), so a dataset labelled on
        # another BEV grid still runs
        inputs = replace(sample, labels={})
        batch, valid = model_batch(inputs, model.setup)
        prediction = predictor.step(batch, camera_valid=valid)
        views = Views.from_sample(sample, model.setup.grid, scale=scale)
        tasks = {name: model.task_objects[name] for name in names}
        outputs = {name: (task, own_cameras(prediction.decoded(name)[0], len(sample.camera_names), task.space))
                   for name, task in tasks.items()}
        title = f"{sample.scene_id} frame {sample.frame_index} - {Path(checkpoint).name} ({', '.join(names)})"
        records.append(write_frame(out, k, sample, views, outputs, ground_truth, title,
                                   camera_names=list(sample.camera_names)))
        if on_frame is not None:
            on_frame(1)
    result = {"checkpoint": str(checkpoint), "data": str(data), "tasks": names, "streamed": stream,
              "tracked": tracking.model_dump() if tracking is not None else None, "frames": records}
    (out / PREDICTIONS).write_text(dumps(result))
    return result
