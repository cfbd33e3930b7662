"""Real-data throughput: convert (frames/s per core, peak memory) and read (samples/s per core) for 6-camera
frames of 1600x900 JPEGs resized to the demo model's input, against what a demo-size training step consumes.

Input: ``--frames`` frames of 6 x 1600x900 JPEG files — copies of the six real nuScenes camera images from
``../shared/realdata`` when present (``--images auto``), else synthesised ones (smooth random textures with
edges, JPEG quality 90, ~the size of real frames) — indexed by a ``frames.jsonl`` (the ``frames`` source:
the path a user's own fleet takes) with ~20 2D and 20 3D boxes per frame.

Measured, each in one process with one compute thread (= per core):

- ``convert``: ``hydranet.data.convert`` of the index into JPEG shards at the model input size (decode 6
  JPEGs, resize, K rescale, encode, write), in a child process for ``--frames`` and 4x as many frames:
  frames/s and the peak RSS growth over the process's baseline after imports. Equal growth for 1x and
  4x frames = memory bounded by one sample (streaming), not by the dataset.
- ``read``: ``ShardDataset`` over those shards, every sample decoded (images + labels), samples/s.
- ``train_step``: the demo model (``configs/demo.yaml``: tiny preset, 96x192, all seven tasks, fp32 — the
  demo's CPU precision) with 6 cameras, batch ``--batch-size``: forward + backward + AdamW with a proxy loss
  (mean of every output), median of ``--steps`` after a warm-up. Label encoding is left out, so the real
  step is slower and the ratio below is a lower bound.
- ``loader_vs_step``: read samples/s per core / samples/s one training step consumes; the target is >= 2.
- ``nuscenes_source`` (when the real keyframe is present): per-sample time of the nuScenes source itself
  (devkit tables, 6 JPEGs, lidar projected for sparse depth, boxes) at the same output size.

Prints one JSON object. Example (a couple of minutes on 2 shared cores):

    .venv/bin/python benchmarks/realdata.py --frames 24 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "realdata"
NUSC_IMAGES = Path("open-mmlab__mmdetection3d") / "demo" / "data" / "nuscenes"  # under the realdata folder
NUSC_ROOT = Path("derived") / "nuscenes_v1.0-mini_scene-0061_sample0"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT", "CAM_BACK")
MODEL_INPUT = (96, 192)  # configs/demo.yaml model.setup.image_size


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _synthetic_jpeg(path: Path, seed: int) -> None:
    """A 1600x900 'photo-like' JPEG: smooth low-frequency colour field + noise + straight edges."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((1600, 900), Image.BICUBIC), dtype=np.float32)
    base += rng.normal(0, 12, base.shape)
    for _ in range(40):  # buildings, lane lines: hard edges that JPEG must spend bits on
        x0, y0 = rng.integers(0, 1500), rng.integers(0, 850)
        base[y0:y0 + rng.integers(5, 200), x0:x0 + rng.integers(5, 300)] = rng.integers(0, 255, 3)
    Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_index(work: Path, frames: int, images: str, real_root: Path = REAL) -> tuple[Path, str]:
    """``frames.jsonl`` over ``frames`` x 6 distinct JPEG files; returns (index, what the images are)."""
    from hydranet.geometry import camera_extrinsics, intrinsics_from_fov

    real = sorted((real_root / NUSC_IMAGES).glob("*__CAM_*.jpg")) if images in ("auto", "nuscenes") else []
    if images == "nuscenes" and len(real) != 6:
        raise SystemExit(f"--images nuscenes: the six nuScenes camera JPEGs are not in {real_root / NUSC_IMAGES}")
    sources = {cam: next((p for p in real if f"__{cam}__" in p.name), None) for cam in CAMERAS}
    kind = "nuscenes_real_jpeg" if all(sources.values()) else "synthetic_jpeg"
    (work / "img").mkdir(parents=True)
    K = intrinsics_from_fov(1600, 900, 64.0).tolist()
    rng = np.random.default_rng(0)
    with open(work / "frames.jsonl", "w") as f:
        for i in range(frames):
            cams = {}
            for k, cam in enumerate(CAMERAS):
                path = work / "img" / f"{i:05d}_{cam}.jpg"
                if kind == "nuscenes_real_jpeg":
                    shutil.copyfile(sources[cam], path)
                else:
                    _synthetic_jpeg(path, seed=i * 6 + k)
                cams[cam] = {"image": str(path.relative_to(work)), "K": K,
                             "T_ego_from_cam": camera_extrinsics((1.0, 0.0, 1.6), 60.0 * k, 0.0).tolist()}
            xy = rng.uniform(0, 800, (20, 2))
            boxes2d = np.concatenate([xy, xy + rng.uniform(20, 200, (20, 2))], 1).round(1).tolist()
            boxes3d = np.concatenate([rng.uniform(-40, 40, (20, 2)), np.full((20, 1), 0.8), np.tile([4.5, 1.9, 1.6],
                                      (20, 1)), rng.uniform(-3, 3, (20, 1))], 1).round(3).tolist()
            line = {"scene_id": "bench", "frame_index": i, "timestamp": 0.1 * i, "T_world_from_ego": np.eye(4).tolist(),
                    "cameras": cams,
                    "labels": {"detection2d": {"boxes": boxes2d, "classes": ["car"] * 20, "camera": [0] * 20},
                               "objects3d": {"boxes": boxes3d, "classes": ["car"] * 20}}}
            f.write(json.dumps(line) + "\n")
    return work / "frames.jsonl", kind


def convert_child(index: str, out: str, frames: int) -> dict[str, Any]:
    """Runs in a child process: convert ``frames`` frames, report time and peak RSS growth."""
    torch.set_num_threads(1)
    from hydranet.data.convert import convert
    from hydranet.datasets import open_source

    source = open_source({"kind": "frames", "index": index, "image_size": list(MODEL_INPUT)})
    base = _rss_mb()
    t0 = time.perf_counter()
    manifest, _ = convert(source, out, image_format="jpeg", shard_size=64, frames=frames, overwrite=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": manifest.num_samples, "seconds": round(seconds, 2),
            "frames_per_s_per_core": round(manifest.num_samples / seconds, 2),
            "rss_baseline_mb": round(base, 1), "rss_peak_mb": round(peak, 1), "rss_growth_mb": round(peak - base, 1),
            "shard_mb": round(sum(s.bytes for s in manifest.shards) / 1e6, 2)}


def _run_child(index: Path, out: Path, frames: int) -> dict[str, Any]:
    here = str(Path(__file__).parent)
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {here!r});"
            f"from realdata import convert_child; "
            f"print(json.dumps(convert_child({str(index)!r}, {str(out)!r}, {frames})))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"convert child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_throughput(shards: Path, passes: int) -> dict[str, Any]:
    from hydranet.data.shards import ShardDataset

    ds = ShardDataset(shards)
    ds[0]  # warm-up: open descriptors, import decoders
    t0 = time.perf_counter()
    n = 0
    for _ in range(passes):
        for i in range(len(ds)):
            s = ds[i]
            n += 1
    seconds = time.perf_counter() - t0
    return {"samples": n, "seconds": round(seconds, 3), "samples_per_s_per_core": round(n / seconds, 1),
            "sample_shape": list(s.images.shape), "labels": sorted(s.labels)}


def train_step(batch_size: int, steps: int) -> dict[str, Any]:
    from hydranet.geometry import camera_extrinsics, intrinsics_from_fov
    from hydranet.model import ModelConfig, create_model
    from hydranet.model.config import ALL_TASKS
    from hydranet.setup import rig_of_frame

    h, w = MODEL_INPUT
    K1 = intrinsics_from_fov(w, h, 64.0).float()
    T1 = torch.stack([camera_extrinsics((1.0, 0.0, 1.6), 60.0 * k, 0.0) for k in range(6)]).float()
    # The model is built for the 6-camera rig it is fed (a nuScenes-like ring), not the world's 8-camera default.
    rig = rig_of_frame("ring6", tuple(f"cam{k}" for k in range(6)), K1.expand(6, 3, 3), T1, [MODEL_INPUT] * 6)
    cfg = ModelConfig.preset("tiny", setup={"image_size": list(MODEL_INPUT), "rigs": [rig],
                                            "grid": {"x_range": [-32, 32], "y_range": [-32, 32], "cell": 1.0}},
                             tasks={t: {} for t in ALL_TASKS})
    torch.manual_seed(0)
    model = create_model(cfg).train()
    images = torch.randint(0, 256, (batch_size, 6, 3, h, w), dtype=torch.uint8)
    K = K1.expand(batch_size, 6, 3, 3).contiguous()
    T = T1.expand(batch_size, 6, 4, 4).contiguous()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(images, K, T)
        loss = sum(v.float().mean() for d in out.values() for v in d.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"model": "tiny preset, 96x192, 7 tasks, fp32", "cameras": 6, "batch_size": batch_size,
            "step_ms_median": round(median * 1000, 1), "step_ms_min": round(min(times) * 1000, 1),
            "samples_per_s_consumed": round(batch_size / median, 2)}


def nuscenes_source(repeats: int, real_root: Path = REAL) -> dict[str, Any] | None:
    if not (real_root / NUSC_ROOT / "v1.0-mini").is_dir():
        return None
    from hydranet.datasets import open_source

    source = open_source({"kind": "nuscenes", "dataroot": str(real_root / NUSC_ROOT), "image_size": list(MODEL_INPUT)})
    source[0]  # devkit tables load lazily
    t0 = time.perf_counter()
    for _ in range(repeats):
        s = source[0]
    per = (time.perf_counter() - t0) / repeats
    return {"ms_per_sample": round(per * 1000, 1), "samples_per_s_per_core": round(1 / per, 2),
            "labels": sorted(s.labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=24, help="frames converted in the 1x run (the 4x run converts 4x)")
    ap.add_argument("--images", choices=("auto", "nuscenes", "synthetic"), default="auto")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--batch-size", type=int, default=4, help="training batch (configs/demo.yaml: 4)")
    ap.add_argument("--read-passes", type=int, default=3)
    ap.add_argument("--root", type=Path, default=REAL, help="the realdata folder (default ../shared/realdata)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="hydranet-realdata-bench-") as tmp:
        work = Path(tmp)
        index, kind = make_index(work / "input", 4 * args.frames, args.images, args.root)
        one = _run_child(index, work / "shards_1x", args.frames)
        four = _run_child(index, work / "shards_4x", 4 * args.frames)
        read = read_throughput(work / "shards_4x", args.read_passes)
    step = train_step(args.batch_size, args.steps)
    ratio = read["samples_per_s_per_core"] / step["samples_per_s_consumed"]
    result = {
        "benchmark": "realdata", "input": {"images": kind, "cameras": 6, "source_size": [900, 1600],
                                           "model_input": list(MODEL_INPUT), "image_format": "jpeg"},
        "convert": {"1x": one, "4x": four,
                    "memory_bounded": four["rss_growth_mb"] <= one["rss_growth_mb"] * 1.25 + 16},
        "read": read, "train_step": step,
        "loader_vs_step": round(ratio, 2), "loader_vs_step_target": 2.0, "loader_fast_enough": ratio >= 2.0,
        "nuscenes_source": nuscenes_source(3, args.root),
        "threads": 1, "torch": torch.__version__,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
