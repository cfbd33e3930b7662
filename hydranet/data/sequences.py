"""Which samples of a dataset are consecutive frames of one scene, from metadata where possible.

Video training (``train/clips.py``) and sequence evaluation (``eval/sequence.py``) need to know, without
decoding images, which dataset indices form a scene's frames in order: the synthetic world (and a ``kind:
world`` source, which serves its world's frames in order) answers by index arithmetic, a shard dataset from
each member's ``sample.json``, any other source of ``Sample`` by loading each sample once (its ``scene_id``
and ``frame_index``).
"""

from __future__ import annotations

import json

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset


def sequence_keys(ds: Dataset) -> tuple[list[str], np.ndarray]:
    """``(scene_id per sample, frame_index int64[n])`` of a dataset, from metadata where possible."""
    if isinstance(ds, Subset):
        scenes, frames = sequence_keys(ds.dataset)
        idx = np.asarray(ds.indices, dtype=np.int64)
        return [scenes[i] for i in idx], frames[idx]
    if isinstance(ds, ConcatDataset):
        scenes_all: list[str] = []
        frames_all = []
        for k, part in enumerate(ds.datasets):
            s, f = sequence_keys(part)
            scenes_all += [f"{k}/{x}" for x in s]  # the same scene name in two datasets is two scenes
            frames_all.append(f)
        return scenes_all, np.concatenate(frames_all) if frames_all else np.zeros(0, np.int64)
    n = len(ds)  # type: ignore[arg-type]
    inner = getattr(ds, "world", None)  # a training config's `kind: world` source: index i is its world's frame i
    if inner is not None and hasattr(inner, "config") and len(inner) == n:
        return sequence_keys(inner)
    cfg = getattr(ds, "config", None)
    if hasattr(ds, "label_present") and cfg is not None and hasattr(cfg, "frames_per_scene"):  # SyntheticWorld
        per = cfg.frames_per_scene
        return [f"world-{cfg.seed}-{i // per:06d}" for i in range(n)], np.arange(n, dtype=np.int64) % per
    if hasattr(ds, "read_members"):  # ShardDataset: sample.json only, no image decoding
        scenes, frames = [], np.zeros(n, np.int64)
        for i in range(n):
            path, key, members = ds.read_members(i)
            if "sample.json" not in members:
                raise ValueError(f"{path} sample {key}: no sample.json, cannot tell its scene and frame")
            meta = json.loads(members["sample.json"])
            scenes.append(str(meta["scene_id"]))
            frames[i] = int(meta["frame_index"])
        return scenes, frames
    samples = [ds[i] for i in range(n)]
    return [s.scene_id for s in samples], np.array([s.frame_index for s in samples], dtype=np.int64)


def clip_starts(scenes: list[str], frames: np.ndarray, length: int) -> np.ndarray:
    """For every sample, the dataset index where its clip of ``length`` consecutive frames starts.

    A run = maximal stretch of indices with one scene and frame_index growing by one. Raises
    ``ValueError`` naming the scene when a run is shorter than ``length``.
    """
    n = len(scenes)
    starts = np.zeros(n, dtype=np.int64)
    run_start = 0
    for i in range(1, n + 1):
        if i == n or scenes[i] != scenes[i - 1] or frames[i] != frames[i - 1] + 1:
            size = i - run_start
            if size < length:
                raise ValueError(f"scene '{scenes[run_start]}' has a run of {size} consecutive frames "
                                 f"(from frame {int(frames[run_start])}), shorter than train.clip.length={length}")
            for j in range(run_start, i):
                starts[j] = min(max(run_start, j - length + 1), i - length)
            run_start = i
    return starts
