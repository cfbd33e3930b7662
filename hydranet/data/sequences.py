"""Which sequence (scene) and frame every sample of a dataset is, read from metadata where possible.

Temporal training (``hydranet.train.clips``) cuts clips of consecutive frames with it, and sequence
evaluation (``hydranet.eval.sequence``) streams each scene in order; neither decodes images for it
when the source can answer from metadata (the synthetic world, shard members' ``sample.json``).
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
