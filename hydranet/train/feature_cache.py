"""Feature cache: the frozen trunk's FPN features, fp16, memory-mapped and sharded, plus labels and geometry.

Sub-graph training trains heads on a frozen trunk. The trunk (+ neck) is then a pure
function of the image, so its outputs can be computed once and read back every epoch: head-only
training skips the trunk's forward and backward, which is most of a HydraNet's compute. Layout::

    CACHE/
      cache.json                 manifest, written last (atomically): format, trunk hash, levels and
                                 shapes, stored labels and their specs, shards, size and write speed
      shard_00000/
        feat.p2.npy ...          float16 [F, N, C, h, w] per FPN level (np.load(mmap_mode="r"))
        intrinsics.npy           float32 [F, N, 3, 3]   (so BEV heads can be trained from the cache:
        T_ego_from_cam.npy       float32 [F, N, 4, 4]    fusion needs K and T)
        T_world_from_ego.npy     float32 [F, 4, 4]
        timestamp.npy, frame_index.npy, present.npy (bool [F, L], L = stored labels in manifest order)
        label.<name>.npy         dense labels [F, ...] in their own dtype (zeros where absent)
        ragged.<name>.<key>.npy  ragged labels concatenated over frames, with ragged.<name>.offsets.npy [F+1]
        meta.json                scene ids

The cache is keyed by the trunk hash (``hydranet.checkpoint.trunk_hash``: trunk + neck tensors,
BatchNorm statistics included); ``FeatureCache.check_trunk`` refuses a cache made by another trunk
with both hashes in the message. Each shard is written into a hidden temporary directory and renamed
into place when complete; the manifest is written last, so a crashed run leaves no readable cache.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

import hydranet.tasks  # noqa: F401 - registers the built-in tasks
from hydranet.data.labels import is_ragged, known_labels
from hydranet.data.sample import Batch, Sample, collate
from hydranet.tasks.base import TASKS

FORMAT = "hydranet-feature-cache/1"
MANIFEST = "cache.json"
MAX_OPEN_SHARDS = 32  # memory-mapped shards kept open per process (see FeatureCache._shard)
GEOMETRY = ("intrinsics", "T_ego_from_cam", "T_world_from_ego", "timestamp", "frame_index")


class CacheError(ValueError):
    """A missing, corrupt, over-budget or mismatched feature cache; the message names the path."""


def task_labels() -> list[str]:
    """The labels every registered task learns from: the default set a cache stores, so a task added
    later (``--add-task``) finds its label in the cache."""

    return sorted({cls.label for cls in TASKS.values() if cls.label in known_labels()})


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _label_nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    return sum(v.numel() * v.element_size() for v in value.values())


def estimate_frame_bytes(feature_shapes: dict[str, tuple[int, ...]], sample: Sample, labels: list[str]) -> dict:
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
class CacheStats:
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0  # wall time of the whole job (loading, trunk, writing)
    write_seconds: float = 0.0  # time spent copying into the memory maps and flushing shards
    shards: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def write_cache(model: nn.Module, dataset: Dataset, out: str | Path, *, trunk_hash: str, frames: int | None = None,
                shard_frames: int = 64, batch_size: int = 4, labels: list[str] | None = None,
                levels: list[str] | None = None, max_gb: float | None = None, num_workers: int = 0,
                device: str | torch.device = "cpu", overwrite: bool = False, info: dict[str, Any] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``model.camera_features`` over ``dataset`` (first ``frames``) and write a cache to ``out``.

    Refuses to start (``CacheError``) when the size estimate exceeds ``max_gb`` or the free disk space.
    Returns the manifest (also written to ``out/cache.json``).
    """
    out = Path(out)
    if shard_frames < 1 or batch_size < 1:
        raise CacheError(f"shard_frames ({shard_frames}) and batch_size ({batch_size}) must be >= 1")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CacheError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
        if not (out / MANIFEST).is_file() and not any(out.glob("shard_*")) and not any(out.glob(".tmp-*")):
            raise CacheError(f"{out}: not a feature cache; refusing to delete it (--overwrite only replaces caches)")
        shutil.rmtree(out)
    total = len(dataset) if frames is None else min(frames, len(dataset))  # type: ignore[arg-type]
    if total < 1:
        raise CacheError(f"{out}: the dataset has no frames to cache")
    labels = sorted(task_labels() if labels is None else labels)
    unknown = [k for k in labels if k not in known_labels()]
    if unknown:
        raise CacheError(f"unknown label(s) {unknown}; known: {sorted(known_labels())}")
    model = model.to(device).eval()

    first: Sample = dataset[0]
    probe = model.camera_features(first.images[None].to(device))
    names = list(probe) if levels is None else levels
    bad = [lv for lv in names if lv not in probe]
    if bad:
        raise CacheError(f"--levels {bad}: the neck produces {list(probe)}")
    n_cam = first.images.shape[0]
    shapes = {lv: (n_cam, *probe[lv].shape[1:]) for lv in names}
    per_frame = estimate_frame_bytes(shapes, first, labels)
    estimate = per_frame["total"] * total
    if max_gb is not None and estimate > max_gb * 1e9:
        raise CacheError(f"{out}: estimated size {estimate / 1e9:.2f} GB ({per_frame['total'] / 1e6:.2f} MB/frame x "
                         f"{total} frames) exceeds --max-gb {max_gb:g}; cache fewer --frames or --levels")
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if estimate > free:
        raise CacheError(f"{out}: estimated size {estimate / 1e9:.2f} GB exceeds the free disk space "
                         f"{free / 1e9:.2f} GB")

    t0 = time.perf_counter()
    stats = CacheStats()
    specs: dict[str, dict[str, Any]] = {}
    loader = DataLoader(Subset(dataset, range(total)), batch_size=batch_size, collate_fn=list,
                        num_workers=num_workers)
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
    stats.seconds = time.perf_counter() - t0
    manifest = {
        "format": FORMAT, "trunk_hash": trunk_hash, "frames": stats.frames, "shard_frames": shard_frames,
        "camera_names": list(first.camera_names), "image_hw": list(first.images.shape[-2:]),
        "levels": {lv: list(s) for lv, s in shapes.items()}, "dtype": "float16", "labels": labels,
        "label_specs": specs, "shards": stats.shards, "bytes": stats.bytes,
        "bytes_per_frame": stats.bytes / max(1, stats.frames), "estimate_bytes_per_frame": per_frame,
        "seconds": stats.seconds, "write_seconds": stats.write_seconds,
        "frames_per_s": stats.frames / max(1e-9, stats.seconds),
        "mb_per_s": stats.bytes / 1e6 / max(1e-9, stats.seconds),
        "write_mb_per_s": stats.bytes / 1e6 / max(1e-9, stats.write_seconds), **(info or {}),
    }
    _atomic_json(out / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


class FeatureCache:
    """A cache directory opened for reading; arrays are memory-mapped lazily, per process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            hint = " (an interrupted write: run cache-features again)" if any(self.path.glob(".tmp-*")) else ""
            raise CacheError(f"{self.path}: not a feature cache (no {MANIFEST}){hint}")
        try:
            self.manifest: dict[str, Any] = json.loads(file.read_text())
        except ValueError as e:
            raise CacheError(f"{file}: corrupt manifest ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"{file}: unknown format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.trunk_hash: str = self.manifest["trunk_hash"]
        self.labels: list[str] = list(self.manifest["labels"])
        self.levels: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in self.manifest["levels"].items()}
        self.camera_names: tuple[str, ...] = tuple(self.manifest["camera_names"])
        self.image_hw: tuple[int, int] = tuple(self.manifest["image_hw"])  # type: ignore[assignment]
        sizes = [s["frames"] for s in self.manifest["shards"]]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._arrays: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._meta: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def check_trunk(self, expected: str, what: str = "the model") -> None:
        """Refuse a cache written by another trunk (weights or BatchNorm statistics differ)."""
        if expected != self.trunk_hash:
            raise CacheError(f"{self.path}: feature cache was made by trunk {self.trunk_hash[:16]}… but {what} has "
                             f"trunk {expected[:16]}…: its features would be wrong for these heads; rebuild it with "
                             f"`hydranet cache-features --ckpt <that checkpoint>` (full hashes: cache "
                             f"{self.trunk_hash}, {what} {expected})")

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: frame {i} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        return s, i - int(self.starts[s])

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        # Python's mmap keeps a duplicated file descriptor per mapped array: a bounded LRU of open shards
        # keeps a large cache (thousands of shard files) under the usual 1024-descriptor limit.
        if s in self._arrays:
            self._arrays.move_to_end(s)
            return self._arrays[s]
        d = self.path / self.manifest["shards"][s]["name"]
        try:
            self._meta[s] = json.loads((d / "meta.json").read_text())["scene_ids"]
        except (OSError, ValueError, KeyError) as e:
            raise CacheError(f"{d}: unreadable shard ({e})") from None
        self._arrays[s] = {}
        while len(self._arrays) > MAX_OPEN_SHARDS:
            old, _ = self._arrays.popitem(last=False)
            self._meta.pop(old, None)
        return self._arrays[s]

    def array(self, s: int, name: str) -> np.ndarray:
        """Array ``name`` of shard ``s``, memory-mapped read-only on first use."""
        arrays = self._shard(s)
        if name not in arrays:
            file = self.path / self.manifest["shards"][s]["name"] / f"{name}.npy"
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{file}: unreadable cache array ({e})") from None
        return arrays[name]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_arrays": OrderedDict(), "_meta": {}}

    def label_presence(self, labels: list[str]) -> dict[str, np.ndarray]:
        out = {}
        parts = []
        for shard in self.manifest["shards"]:  # read, not mapped: a few bytes per frame
            file = self.path / shard["name"] / "present.npy"
            try:
                parts.append(np.load(file))
            except (OSError, ValueError) as e:
                raise CacheError(f"{file}: unreadable cache array ({e})") from None
        present = np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), bool)
        for k in labels:
            out[k] = present[:, self.labels.index(k)].copy() if k in self.labels else np.zeros(len(self), bool)
        return out

    def read(self, i: int, labels: list[str] | None = None, levels: list[str] | None = None) -> CachedSample:
        """Frame ``i``; ``labels``/``levels`` limit what is read (None = everything stored)."""
        s, j = self.locate(i)
        if levels is not None and not set(levels) <= set(self.levels):
            raise CacheError(f"{self.path}: FPN level(s) {sorted(set(levels) - set(self.levels))} are not cached "
                             f"(cached: {sorted(self.levels)})")

        def row(name: str, index: Any = j) -> Tensor:  # a copy: the batch must not alias the read-only map
            return torch.from_numpy(np.array(self.array(s, name)[index]))

        feats = {lv: row(f"feat.{lv}") for lv in (self.levels if levels is None else levels)}
        present = self.array(s, "present")[j]
        out: dict[str, Any] = {}
        for li, label in enumerate(self.labels):
            if (labels is not None and label not in labels) or not present[li]:
                continue
            if is_ragged(label):
                lo, hi = (int(x) for x in self.array(s, f"ragged.{label}.offsets")[j:j + 2])
                keys = self.manifest["label_specs"][label]["keys"]
                out[label] = {k: row(f"ragged.{label}.{k}", slice(lo, hi)) for k in keys}
            else:
                out[label] = row(f"label.{label}")
        return CachedSample(
            features=feats, intrinsics=row("intrinsics"), T_ego_from_cam=row("T_ego_from_cam"),
            T_world_from_ego=row("T_world_from_ego"), timestamp=float(self.array(s, "timestamp")[j]),
            scene_id=self._meta[s][j], frame_index=int(self.array(s, "frame_index")[j]),
            camera_names=self.camera_names, image_hw=self.image_hw, labels=out)


@dataclass
class CachedSample:
    """One cached frame: fp16 features ``{level: [N, C, h, w]}`` instead of images; labels as in ``Sample``."""

    features: dict[str, Tensor]
    intrinsics: Tensor
    T_ego_from_cam: Tensor
    T_world_from_ego: Tensor
    timestamp: float
    scene_id: str
    frame_index: int
    camera_names: tuple[str, ...]
    image_hw: tuple[int, int]
    labels: dict[str, Any]


@dataclass
class CachedBatch(Batch):
    """A ``Batch`` whose images are a zero-stride placeholder (tasks read only their shape) and whose
    ``features`` are the cached FPN levels, ``{level: [B*N, C, h, w]}`` (fp16 as stored)."""

    features: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> CachedBatch:
        shape = self.images.shape  # move a scalar, then expand again: the placeholder never materialises
        moved = Batch.to(replace(self, images=torch.zeros((), dtype=torch.uint8)), device)
        moved.images = torch.zeros((), dtype=torch.uint8, device=moved.images.device).expand(shape)
        return CachedBatch(**{k: getattr(moved, k) for k in Batch.__dataclass_fields__},
                           features={k: v.to(device, non_blocking=True) for k, v in self.features.items()})


def collate_cached(samples: list[CachedSample]) -> CachedBatch:
    """Like ``hydranet.data.sample.collate``, for cached frames (features stacked camera-major)."""
    if not samples:
        raise ValueError("collate_cached: empty list of samples")
    template = [Sample(images=torch.zeros((len(s.camera_names), 3, 1, 1), dtype=torch.uint8),
                       intrinsics=s.intrinsics, T_ego_from_cam=s.T_ego_from_cam, T_world_from_ego=s.T_world_from_ego,
                       timestamp=s.timestamp, scene_id=s.scene_id, camera_names=s.camera_names,
                       frame_index=s.frame_index, labels=s.labels) for s in samples]
    base = collate(template)  # labels, presence masks and geometry exactly as for real frames
    b, n = len(samples), len(samples[0].camera_names)
    h, w = samples[0].image_hw
    base.images = torch.zeros((), dtype=torch.uint8).expand(b, n, 3, h, w)
    feats = {lv: torch.stack([s.features[lv] for s in samples]).flatten(0, 1) for lv in samples[0].features}
    return CachedBatch(**{k: getattr(base, k) for k in Batch.__dataclass_fields__}, features=feats)


class CachedFeatureDataset(Dataset):
    """Map-style dataset over a ``FeatureCache``: ``ds[i] -> CachedSample``; ``labels`` and ``levels`` limit
    what is read (the trainer passes the labels and FPN levels its heads need)."""

    def __init__(self, cache: FeatureCache | str | Path, labels: list[str] | None = None,
                 levels: list[str] | None = None) -> None:
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.labels, self.levels = labels, levels

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> CachedSample:
        return self.cache.read(int(i), self.labels, self.levels)

    def label_presence(self, labels: list[str]) -> dict[str, np.ndarray]:
        return self.cache.label_presence(labels)
