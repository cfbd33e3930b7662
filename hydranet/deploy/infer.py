"""``hydranet infer``: decode and draw predictions of an exported graph using only the graph and its manifest.

A temporal graph (``deploy/streaming.py``) is streamed: frames run in order, the state carried from one to the
next and reset at each new scene, exactly as the car's runtime would. With ``track``, any graph with an
``objects3d`` head is streamed over consecutive frames and its boxes are tracked (``hydranet.eval.tracking``):
each gets a ``track_id`` and the velocity of its track.

Per frame it writes ``frame_0000.png`` (``Views.compose``: the 8 cameras as on the car + the BEV panel,
every task drawn by its own ``draw``) and, for dense outputs (masks, depth, BEV maps), ``frame_0000.npz``;
``predictions.json`` lists every frame's decoded objects (boxes, scores, classes, cameras...) and, for dense
outputs, their file, shape and a summary. The directory appears whole or not at all
(``hydranet.outputs.staged_directory``). Nothing here builds a ``HydraNet`` or reads a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hydranet.data import Sample, collate
from hydranet.datasets import dataset_setup, open_data_option
from hydranet.deploy.heldout import EVAL_SEED, spread_indices, world_for
from hydranet.deploy.runtime import DeployedModel
from hydranet.eval import TRACKED_TASK, Evaluator, TrackerOptions
from hydranet.json_files import dumps
from hydranet.outputs import staged_directory
from hydranet.setup import check_fits
from hydranet.tasks import grid_raster_tasks
from hydranet.viz import Views

PREDICTIONS = "predictions.json"  # every frame's decoded outputs; marks a directory as predict/infer output


def recorded_predictions(out: Path) -> set[str]:
    """The files an earlier ``predict``/``infer`` output in ``out`` records (``predictions.json`` and each frame it
    lists: ``frame_XXXX.png``/``.npz``): what an ``--overwrite`` may replace, and nothing else."""
    frames = json.loads((out / PREDICTIONS).read_text())["frames"]
    return {PREDICTIONS, *(f"frame_{int(r['frame']):04d}.{ext}" for r in frames for ext in ("png", "npz"))}


_NAME_ATTRS = ("classes", "states", "kinds")  # task attributes that name class indices


def _round(x: Tensor) -> list:
    if x.dtype.is_floating_point:
        return np.round(x.detach().cpu().numpy().astype(np.float64), 4).tolist()
    return x.detach().cpu().tolist()


def _dense_summary(x: Tensor) -> dict[str, Any]:
    """What a dense decoded output holds, in a few numbers (the array itself goes to the .npz)."""
    info: dict[str, Any] = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
    if x.dtype.is_floating_point:
        info |= {"min": round(float(x.min()), 4), "mean": round(float(x.float().mean()), 4),
                 "max": round(float(x.max()), 4)}
    else:
        values, counts = torch.unique(x, return_counts=True)
        info["fraction"] = {str(int(v)): round(int(c) / x.numel(), 5) for v, c in zip(values, counts, strict=True)}
    return info


def _open_frames(dm: DeployedModel, data: str, frames: int | None, ground_truth: bool,
                 consecutive: bool) -> tuple[Any, list[int]]:
    """The dataset and indices to run: ``synthetic`` renders held-out frames for the manifest's setup; anything
    else is opened for it (``open_dataset(setup=)``: a world renders it, a source resizes to its image size and
    maps classes onto its vocabulary) and checked against it (``check_fits``: image size and cameras; with
    ``ground_truth`` also the vocabularies the labels are drawn in and, for the tasks whose labels lie on the BEV
    grid (``grid_raster_tasks``), the grid: 3D boxes are in metres and draw on any grid), ``SetupMismatchError``
    naming ``--data``."""
    if data == "synthetic":
        n = frames or 8
        # A temporal graph carries its memory, and a tracker its tracks, from frame to frame: consecutive frames.
        return world_for(dm.manifest, EVAL_SEED, n), list(range(n)) if consecutive else spread_indices(n)

    dataset = open_data_option(data, setup=dm.setup)
    setup, source, name = dataset_setup(dataset), f"--data {data}", f"graph {dm.path}"
    # The predictions alone fit any grid and vocabulary: only labels drawn beside them (--ground-truth) need the
    # graph's classes, and those lying on the grid its grid.
    check_fits(setup, dm.setup, source, model_name=name,
               labels=[task.label for task in dm.tasks.values()] if ground_truth else (),
               grid_tasks=grid_raster_tasks(dm.tasks) if ground_truth else (),
               remedy="leave out --ground-truth, or export a graph without those tasks (export --tasks)")
    n = len(dataset) if frames is None else min(frames, len(dataset))
    return dataset, list(range(n))


def run_infer(graph: str | Path, data: str, out: str | Path, frames: int | None = None, threads: int | None = None,
              ground_truth: bool = False, scale: int = 2, on_frame: Callable[[int], None] | None = None,
              overwrite: bool = False, track: bool = False) -> dict[str, Any]:
    """Run ``graph`` over ``data`` into the directory ``out``; returns the JSON written (``predictions.json``).

    ``data``: ``synthetic`` (held-out frames rendered for the graph's setup) or anything
    ``hydranet.datasets.open_dataset`` takes (``KIND:PATH``, shards path or URL, a source or world YAML), opened
    for the graph's setup (its manifest's); data that still does not fit raises ``SetupMismatchError`` naming it.

    ``out`` is filled through ``hydranet.outputs.staged_directory``: an existing non-empty ``out`` is refused
    (``OutputError``) unless ``overwrite``, which replaces only an earlier ``infer``/``predict`` output, and
    only once every frame is written; a failure (a corrupt shard, a full disk: ``OutputWriteError`` naming
    the file) leaves no ``out`` (or the old one untouched). ``track``: stream the frames in order and track the
    ``objects3d`` boxes (module docstring); ``ValueError`` (``Evaluator``'s) for a graph without that head."""
    with staged_directory(out, overwrite, PREDICTIONS, owned=recorded_predictions) as stage:
        return _infer_into(stage, graph, data, frames, threads, ground_truth, scale, on_frame, track)


def _infer_into(out: Path, graph: str | Path, data: str, frames: int | None, threads: int | None,
                ground_truth: bool, scale: int, on_frame: Callable[[int], None] | None,
                track: bool) -> dict[str, Any]:
    """``run_infer``'s body, writing into ``out`` (the staging directory)."""
    dm = DeployedModel(graph, threads=threads)
    m = dm.manifest
    stream = dm.is_temporal or track
    if stream and m.batch != 1:
        raise ValueError(f"{graph}: a graph exported with batch {m.batch} runs {m.batch} parallel sequences; "
                         "hydranet infer streams one sequence (a temporal graph, or --track): export with --batch 1")
    if track and TRACKED_TASK not in dm.tasks:  # before: the evaluator's own words ("it needs stream=True ...")
        raise ValueError(f"--track: tracking follows {TRACKED_TASK} boxes over a scene's frames, and graph {graph} has "
                         f"no {TRACKED_TASK} head ({sorted(dm.tasks)}): export one with {TRACKED_TASK} in --tasks")
    tracking = TrackerOptions() if track else None
    # Streamed: from the zero state (no tracks), and again at each new scene (the Streamer's rule). Built before
    # any frame is opened: the evaluator refuses tracking on a graph without objects3d.
    predictor = Evaluator(dm, score=False, stream=stream, tracking=tracking)
    dataset, indices = _open_frames(dm, data, frames, ground_truth, consecutive=stream)
    grid = m.bev_grid
    records = []
    for s in range(0, len(indices), m.batch):
        samples = [dataset[i] for i in indices[s:s + m.batch]]
        # the graph's input: no labels (they are only drawn, with ground_truth), so a dataset labelled on another
        # BEV grid still runs (bev_semantic decodes onto its label's grid when the batch holds one)
        prediction = predictor.step(collate([replace(sample, labels={}) for sample in samples]))
        for j, sample in enumerate(samples):
            views = Views.from_sample(sample, grid, scale=scale)
            outputs = {name: (task, prediction.decoded(name)[j]) for name, task in dm.tasks.items()}
            title = f"{sample.scene_id} frame {sample.frame_index} - {m.graph} ({', '.join(dm.tasks)})"
            records.append(write_frame(out, len(records), sample, views, outputs, ground_truth, title,
                                       index=indices[s + j]))
            if on_frame is not None:
                on_frame(1)
    result = {"graph": str(Path(graph)), "data": data, "tasks": list(dm.tasks), "streamed": stream,
              "tracked": tracking.model_dump() if tracking is not None else None,
              "camera_names": m.camera_names,
              "trunk_hash": m.trunk_hash, "quantization": m.quantization.model_dump() if m.quantization else None,
              "frames": records}
    (out / PREDICTIONS).write_text(dumps(result))
    return result


def describe_outputs(out: str | Path) -> str:
    """What a finished ``predict``/``infer`` wrote into ``out``, for its console line: ``predictions.json``
    and how many ``frame_XXXX.png`` (pictures) and ``frame_XXXX.npz`` (dense outputs) files, e.g.
    ``predictions.json, 4 frame_XXXX.png, 4 frame_XXXX.npz``."""
    out = Path(out)
    parts = [PREDICTIONS] if (out / PREDICTIONS).is_file() else []
    for ext in ("png", "npz"):
        count = sum(1 for _ in out.glob(f"frame_*.{ext}"))
        if count:
            parts.append(f"{count} frame_XXXX.{ext}")
    return ", ".join(parts)


def write_frame(out: Path, k: int, sample: Sample, views: Views, outputs: dict[str, tuple[Any, Any]],
                ground_truth: bool, title: str, **extra: Any) -> dict[str, Any]:
    """Draw frame ``k``'s decoded ``outputs`` (task name -> ``(Task, decoded value)``) on ``views`` (with each task's
    label from ``sample`` over it when ``ground_truth``), save ``frame_{k:04d}.png`` (and ``frame_{k:04d}.npz`` for
    dense outputs) into ``out`` and return the frame's JSON record: ``frame``, ``extra``'s fields, ``scene_id``,
    ``frame_index``, ``image_size`` ([H, W] of the network input ``sample`` holds: the pixels its boxes and dense
    maps are in, not the source's native size) and each task's ``draw_and_record`` entry. The one writer of
    ``predict``'s and ``infer``'s frames."""
    record: dict[str, Any] = {"frame": k, **extra, "scene_id": sample.scene_id, "frame_index": sample.frame_index,
                              "image_size": list(sample.images.shape[-2:]), "tasks": {}}
    dense: dict[str, np.ndarray] = {}
    for name, (task, value) in outputs.items():
        label = sample.labels.get(task.label) if ground_truth else None
        record["tasks"][name] = draw_and_record(views, task, name, value, label, dense, k)
    if dense:
        np.savez_compressed(out / f"frame_{k:04d}.npz", **dense)
    views.compose(title=title).save(out / f"frame_{k:04d}.png")
    return record


def draw_and_record(views: Any, task: Any, name: str, value: Any, label: Any, dense: dict[str, np.ndarray],
                    k: int) -> dict[str, Any]:
    """Draw one task's decoded output of frame ``k`` on ``views`` and over it ``label``, its ground truth, when not
    None (boxes dashed, masks as outlines, depth as dots: ``Canvas.truth_over_predictions``); return the task's JSON
    record. A dense output (a tensor) goes into ``dense[name]`` (saved by the caller as ``frame_{k:04d}.npz``) and
    is summarised; a ragged one (dict of tensors) is recorded rounded, with the task's class/state names."""
    task.draw(views, value)
    if label is not None:
        views.truth_over_predictions = True
        try:
            task.draw(views, label, ground_truth=True)
        finally:
            views.truth_over_predictions = False
    if isinstance(value, Tensor):
        dense[name] = value.numpy()
        return {"file": f"frame_{k:04d}.npz", "key": name, **_dense_summary(value)}
    entry = {key: _round(v) for key, v in value.items()}
    for attr in _NAME_ATTRS:
        if hasattr(task, attr):
            entry["names"] = list(getattr(task, attr))
    return entry
