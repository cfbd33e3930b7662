"""Writing a feature cache: run the frozen trunk (+ neck) over a dataset once and store its FPN features
(fp16), labels and geometry in memory-mapped shards, then the manifest (layout: ``feature_cache_format.py``).

Each shard fills a hidden temporary directory frame by frame and is renamed into place when complete;
the manifest is written last and atomically, so a crashed run leaves no readable cache. The size is
estimated from the first frame before any work, and a run that would exceed ``--max-gb`` or the free
disk space is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from hydranet.data import Batch, Sample, collate, is_ragged, known_labels
from hydranet.setup import Setup
from hydranet.train.feature_cache_format import (
    FORMAT,
    GEOMETRY,
    MANIFEST,
    CacheError,
    task_labels,
    write_json_atomic,
)


def _label_nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    return sum(v.numel() * v.element_size() for v in value.values())


def _estimate_frame_bytes(feature_shapes: dict[str, tuple[int, ...]], sample: Sample, labels: list[str]) -> dict:
    """Bytes per frame: features (exact) and labels (from ``sample``: ragged sizes vary by frame)."""
    feats = sum(int(np.prod(s)) * 2 for s in feature_shapes.values())
    lab = sum(_label_nbytes(sample.labels[k]) for k in labels if k in sample.labels)
    geo = sample.intrinsics.numel() * 4 + sample.T_ego_from_cam.numel() * 4 + 16 * 4 + 8 + 8 + len(labels)
    return {"features": feats, "labels": lab, "geometry": geo, "total": feats + lab + geo}


class _ShardWriter:
    """Fills one shard's arrays frame by frame; ``close`` flushes them and renames the directory in."""

    def __init__(self, root: Path, index: int, frames: int, feature_shapes: dict[str, tuple[int, ...]],
                 labels: list[str], specs: dict[str, dict[str, Any]]) -> None:
        self.name = f"shard_{index:05d}"
        self.final = root / self.name
        self.dir = root / f".tmp-{self.name}-{os.getpid()}"
        self.dir.mkdir()
        self.frames, self.labels, self.specs = frames, labels, specs
        self.n = 0
        self.arrays: dict[str, np.memmap] = {}
        for level, shape in feature_shapes.items():
            self._open(f"feat.{level}", (frames, *shape), np.float16)
        self.present = np.zeros((frames, len(labels)), dtype=bool)
        self.geometry: dict[str, list[np.ndarray]] = {k: [] for k in GEOMETRY}
        self.scene_ids: list[str] = []
        self.ragged: dict[str, dict[str, list[np.ndarray]]] = {k: {} for k in labels if is_ragged(k)}
        self.counts: dict[str, list[int]] = {k: [] for k in self.ragged}

    def _open(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        # open_memmap writes a .npy header, then the OS pages data out: bounded memory for any shard size.
        arr = np.lib.format.open_memmap(self.dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        self.arrays[name] = arr
        return arr

    def add(self, feats: dict[str, np.ndarray], sample: Sample, where: str) -> None:
        j = self.n
        for level, x in feats.items():
            self.arrays[f"feat.{level}"][j] = x
        self.geometry["intrinsics"].append(sample.intrinsics.numpy().astype(np.float32))
        self.geometry["T_ego_from_cam"].append(sample.T_ego_from_cam.numpy().astype(np.float32))
        self.geometry["T_world_from_ego"].append(sample.T_world_from_ego.numpy().astype(np.float32))
        self.geometry["timestamp"].append(np.float64(sample.timestamp))
        self.geometry["frame_index"].append(np.int64(sample.frame_index))
        self.scene_ids.append(sample.scene_id)
        for li, label in enumerate(self.labels):
            value = sample.labels.get(label)
            if is_ragged(label):
                count = 0
                if value is not None:
                    count = self._add_ragged(label, value, where)
                self.counts[label].append(count)
            elif value is not None:
                self._add_dense(label, value, j, where)
            self.present[j, li] = value is not None
        self.n += 1

    def _add_dense(self, label: str, value: Tensor, j: int, where: str) -> None:
        spec = self.specs.setdefault(label, {"kind": "dense", "dtype": str(value.numpy().dtype),
                                             "shape": list(value.shape)})
        if list(value.shape) != spec["shape"] or str(value.numpy().dtype) != spec["dtype"]:
            raise CacheError(f"{where}: label '{label}' is {value.numpy().dtype} {tuple(value.shape)}, earlier "
                             f"frames had {spec['dtype']} {tuple(spec['shape'])}")
        name = f"label.{label}"
        arr = self.arrays.get(name)
        if arr is None:  # allocated on first sight: a shard where the label never occurs stores nothing
            arr = self._open(name, (self.frames, *spec["shape"]), np.dtype(spec["dtype"]))
        arr[j] = value.numpy()

    def _add_ragged(self, label: str, value: dict[str, Tensor], where: str) -> int:
        keys = sorted(value)
        spec = self.specs.setdefault(label, {"kind": "ragged", "keys": {
            k: {"dtype": str(value[k].numpy().dtype), "tail": list(value[k].shape[1:])} for k in keys}})
        if keys != sorted(spec["keys"]):
            raise CacheError(f"{where}: label '{label}' has keys {keys}, earlier frames {sorted(spec['keys'])}")
        counts = {int(value[k].shape[0]) for k in keys}
        if len(counts) != 1:
            raise CacheError(f"{where}: label '{label}' tensors disagree on their first dimension: "
                             f"{ {k: tuple(value[k].shape) for k in keys} }")
        for k in keys:
            arr = value[k].numpy()
            want = spec["keys"][k]
            if list(arr.shape[1:]) != want["tail"] or str(arr.dtype) != want["dtype"]:
                raise CacheError(f"{where}: label '{label}.{k}' is {arr.dtype} {arr.shape}, expected "
                                 f"{want['dtype']} [M, {', '.join(map(str, want['tail']))}]")
            self.ragged[label].setdefault(k, []).append(arr)
        return counts.pop()

    def close(self) -> tuple[str, int, int]:
        """Flush, truncate to the frames written, rename into place; returns (name, frames, bytes)."""
        n = self.n
        assert n == self.frames, "a shard is sized to the frames it will hold"
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()
        np.save(self.dir / "present.npy", self.present[:n])
        for k, v in self.geometry.items():
            np.save(self.dir / f"{k}.npy", np.stack(v) if v[0].ndim else np.array(v))
        for label, parts in self.ragged.items():
            np.save(self.dir / f"ragged.{label}.offsets.npy", np.concatenate([[0], np.cumsum(self.counts[label])]))
            spec = self.specs.get(label)
            for k in (spec["keys"] if spec else {}):
                tail, dtype = spec["keys"][k]["tail"], np.dtype(spec["keys"][k]["dtype"])
                data = np.concatenate(parts[k]) if parts.get(k) else np.zeros((0, *tail), dtype)
                np.save(self.dir / f"ragged.{label}.{k}.npy", data)
        (self.dir / "meta.json").write_text(json.dumps({"scene_ids": self.scene_ids}))
        size = sum(p.stat().st_size for p in self.dir.iterdir())
        for p in self.dir.iterdir():  # durability before the rename makes the shard visible
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.replace(self.dir, self.final)
        return self.name, n, size


@dataclass
class _CacheStats:
    """What a ``write_cache`` run did: frames and bytes written, wall and write seconds, and one
    ``{"name", "frames", "bytes"}`` entry per shard (these go into the manifest)."""

    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0  # wall time of the whole job (loading, trunk, writing)
    write_seconds: float = 0.0  # time spent copying into the memory maps and flushing shards
    shards: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def write_cache(model: nn.Module, dataset: Dataset, out: str | Path, *, trunk_hash: str, setup: Setup,
                frames: int | None = None,
                shard_frames: int = 64, batch_size: int = 4, labels: list[str] | None = None,
                levels: list[str] | None = None, max_gb: float | None = None, num_workers: int = 0,
                device: str | torch.device = "cpu", overwrite: bool = False, info: dict[str, Any] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``model.camera_features`` over ``dataset`` (first ``frames``) and write a cache to ``out``.

    ``model`` maps uint8 images ``[B*N, 3, H, W]`` to ``{level: [B*N, C, h, w]}`` (a HydraNet's trunk +
    neck); features are stored float16 ``[F, N, C, h, w]`` per level in shards of ``shard_frames``
    frames, with ``labels`` (default: every registered task's label) and the geometry of each frame.
    ``levels`` limits the FPN levels stored; ``trunk_hash`` keys the cache (``FeatureCache.check_trunk``);
    ``setup`` is the data's (``hydranet.datasets.dataset_setup``): the heads trained on the cache are checked
    against it as against the data itself (image size, rigs, the BEV grid of ``bev_semantic``'s maps, classes);
    ``info`` is merged into the manifest; ``on_progress(done, total)`` is called after every batch.

    Refuses to start (``CacheError``) when the size estimate exceeds ``max_gb`` or the free disk space,
    when ``out`` is a non-empty directory (without ``overwrite``, or one that is not a cache), or on an
    unknown label or level; a frame whose label changes shape, dtype or keys mid-run raises ``CacheError``
    naming the frame. Returns the manifest (also written to ``out/cache.json``).
    """
    out = Path(out)
    if shard_frames < 1 or batch_size < 1:
        raise CacheError(f"shard_frames ({shard_frames}) and batch_size ({batch_size}) must be >= 1")
    _clear_out(out, overwrite)
    total = len(dataset) if frames is None else min(frames, len(dataset))  # type: ignore[arg-type]
    if total < 1:
        raise CacheError(f"{out}: the dataset has no frames to cache")
    labels = sorted(task_labels() if labels is None else labels)
    unknown = [k for k in labels if k not in known_labels()]
    if unknown:
        raise CacheError(f"unknown label(s) {unknown}; known: {sorted(known_labels())}")
    model = model.to(device).eval()

    first: Sample = dataset[0]
    names, shapes, per_frame = _plan(model, first, out, levels, labels, total, max_gb, device)
    t0 = time.perf_counter()
    stats = _CacheStats()
    specs: dict[str, dict[str, Any]] = {}
    loader = DataLoader(Subset(dataset, range(total)), batch_size=batch_size, collate_fn=list,
                        num_workers=num_workers)
    _write_shards(model, loader, out, total, shard_frames, names, shapes, labels, specs, stats, device,
                  first.images.shape[0], on_progress)
    stats.seconds = time.perf_counter() - t0
    manifest = {
        "format": FORMAT, "trunk_hash": trunk_hash, "setup": setup.model_dump(mode="json"),
        "frames": stats.frames, "shard_frames": shard_frames,
        "camera_names": list(first.camera_names), "image_hw": list(first.images.shape[-2:]),
        "levels": {lv: list(s) for lv, s in shapes.items()}, "dtype": "float16", "labels": labels,
        "label_specs": specs, "shards": stats.shards, "bytes": stats.bytes,
        "bytes_per_frame": stats.bytes / max(1, stats.frames), "estimate_bytes_per_frame": per_frame,
        "seconds": stats.seconds, "write_seconds": stats.write_seconds,
        "frames_per_s": stats.frames / max(1e-9, stats.seconds),
        "mb_per_s": stats.bytes / 1e6 / max(1e-9, stats.seconds),
        "write_mb_per_s": stats.bytes / 1e6 / max(1e-9, stats.write_seconds), **(info or {}),
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def _clear_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``, and then delete it only if it is a feature cache."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CacheError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
        if not (out / MANIFEST).is_file() and not any(out.glob("shard_*")) and not any(out.glob(".tmp-*")):
            raise CacheError(f"{out}: not a feature cache; refusing to delete it (--overwrite only replaces caches)")
        shutil.rmtree(out)


def _plan(model: nn.Module, first: Sample, out: Path, levels: list[str] | None, labels: list[str], total: int,
          max_gb: float | None, device: str | torch.device) -> tuple[list[str], dict[str, tuple[int, ...]], dict]:
    """Probe the first frame: the levels to store, their per-frame shapes ``(N, C, h, w)`` and the byte
    estimate per frame; refuse levels the neck does not make and a cache larger than the budget or disk."""
    probe = model.camera_features(first.images[None].to(device))
    names = list(probe) if levels is None else levels
    bad = [lv for lv in names if lv not in probe]
    if bad:
        raise CacheError(f"--levels {bad}: the neck produces {list(probe)}")
    n_cam = first.images.shape[0]
    shapes = {lv: (n_cam, *probe[lv].shape[1:]) for lv in names}
    per_frame = _estimate_frame_bytes(shapes, first, labels)
    estimate = per_frame["total"] * total
    if max_gb is not None and estimate > max_gb * 1e9:
        raise CacheError(f"{out}: estimated size {estimate / 1e9:.2f} GB ({per_frame['total'] / 1e6:.2f} MB/frame x "
                         f"{total} frames) exceeds --max-gb {max_gb:g}; cache fewer --frames or --levels")
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if estimate > free:
        raise CacheError(f"{out}: estimated size {estimate / 1e9:.2f} GB exceeds the free disk space "
                         f"{free / 1e9:.2f} GB")
    return names, shapes, per_frame


def _write_shards(model: nn.Module, loader: DataLoader, out: Path, total: int, shard_frames: int, names: list[str],
                  shapes: dict[str, tuple[int, ...]], labels: list[str], specs: dict[str, dict[str, Any]],
                  stats: _CacheStats, device: str | torch.device, n_cam: int,
                  on_progress: Callable[[int, int], None] | None) -> None:
    """The trunk over every batch, each frame's features and labels into the current shard; fills ``stats``
    (frames, bytes, shards, write time) and ``specs`` (each label's dtype and shape, from first sight)."""
    writer: _ShardWriter | None = None
    done = 0
    for samples in loader:
        batch: Batch = collate(samples)
        feats = model.camera_features(batch.images.to(device))
        host = {lv: feats[lv].to(torch.float16).cpu().numpy() for lv in names}
        tw = time.perf_counter()
        for b, sample in enumerate(samples):
            if writer is None:
                writer = _ShardWriter(out, len(stats.shards), min(shard_frames, total - done), shapes, labels, specs)
            sl = slice(b * n_cam, (b + 1) * n_cam)
            writer.add({lv: host[lv][sl] for lv in names}, sample, f"frame {done} ({sample.scene_id}"
                                                                   f"#{sample.frame_index})")
            done += 1
            if writer.n == writer.frames:
                name, n, size = writer.close()
                stats.shards.append({"name": name, "frames": n, "bytes": size})
                writer = None
        stats.write_seconds += time.perf_counter() - tw
        if on_progress is not None:
            on_progress(done, total)
    stats.frames = done
    stats.bytes = sum(s["bytes"] for s in stats.shards)
