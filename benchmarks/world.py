"""Synthetic-world throughput, one core: 8-camera frames generated per second (render + all labels)
at the default 8 x 128 x 256, and frames read back per second from shards written by
`hydranet generate` (hydranet.data.shards.ShardDataset). Prints one JSON object.

Reading is measured three ways on the same npz shards -- every label (``loaded_*``), only
``READ_SUBSET``'s labels (``loaded_subset_*``) and through ``make_loader`` with collate
(``loader_*``) -- and the shards' bytes per frame are split by tar member (``shard_kb_per_frame``).
``png``: the same frames written with ``image_format="png"``: bytes per frame and all-label read rate.

Both wall-clock (`*_per_s`) and CPU-time (`*_per_cpu_s`) rates are reported: on a shared machine
(load average > cores) the wall-clock rate measures the neighbours, the CPU-time rate of this
single-threaded process is the per-core figure.

    .venv/bin/python benchmarks/world.py [--frames 40] [--read-frames 200] [--png-frames 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch


def bench_generate(frames: int) -> dict:
    from hydranet.world import SyntheticWorld, WorldConfig

    cfg = WorldConfig(seed=123, num_scenes=max(9, frames // 8 + 1), frames_per_scene=8)
    world = SyntheticWorld(cfg)
    world[0]  # warm-up (lazy imports, ray cache)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, frames + 1):
        world[i]  # consecutive scenes: scene generation is amortised as in `hydranet generate`
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    by_lighting = {}
    for lighting in ("day", "dusk", "night"):
        w = SyntheticWorld(cfg.model_copy(update={"lighting": lighting}))
        t1 = time.process_time()
        for i in range(8):
            w[i * 9]
        by_lighting[lighting] = round(8 / (time.process_time() - t1), 2)
    return {"generated_frames_per_s": round(frames / dt, 2), "generated_ms_per_frame": round(1000 * dt / frames, 1),
            # CPU time of this (single-threaded) process: the per-core rate even on a loaded machine
            "generated_frames_per_cpu_s": round(frames / cpu, 2),
            "generated_cpu_ms_per_frame": round(1000 * cpu / frames, 1),
            "generated_frames_per_cpu_s_by_lighting": by_lighting,
            "image": [len(cfg.rendered_rig), 3, *cfg.setup.image_size]}


READ_SUBSET = ["detection2d", "drivable", "lanes"]


def _read_rate(ds, frames: int) -> dict:
    ds[0]
    t1, c1 = time.perf_counter(), time.process_time()
    for k in range(frames):
        ds[k % len(ds)]
    dt, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {"per_s": round(frames / dt, 1), "ms_per_frame": round(1000 * dt / frames, 2),
            "per_cpu_s": round(frames / cpu, 1)}


def _shard_bytes(root: str, frames: int) -> dict:
    """kB per frame by tar member kind (``000000001.depth.npz`` -> ``depth``; every ``cam.<name>`` image
    counted as ``images``), ``other_labels`` (every kind but images, depth and the sample's JSON) and ``total``."""
    by_kind: Counter = Counter()
    for shard in Path(root).glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                kind = member.name.split(".", 1)[1].rsplit(".", 1)[0]
                by_kind["images" if kind.startswith("cam.") else kind] += member.size
    out = {k: round(v / frames / 1e3, 1) for k, v in by_kind.most_common()}
    other = sum(v for k, v in by_kind.items() if k not in ("images", "depth", "sample"))
    out["other_labels"] = round(other / frames / 1e3, 1)
    out["total"] = round(sum(by_kind.values()) / frames / 1e3, 1)
    return out


def bench_read(frames: int, png_frames: int) -> dict:
    try:
        from hydranet.data.loaders import make_loader
        from hydranet.data.shards import ShardDataset
        from hydranet.world.generate import generate
    except ImportError as e:  # the shard reader lives in hydranet/data (another area)
        return {"loaded_frames_per_s": None, "note": f"shard reader unavailable: {e}"}
    from hydranet.world import WorldConfig

    n_write = min(frames, 64)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        generate(d, WorldConfig(seed=7, num_scenes=n_write // 16 + 1, frames_per_scene=16), frames=n_write,
                 shard_size=32)
        write_s = time.perf_counter() - t0
        every = _read_rate(ShardDataset(d), frames)
        subset = _read_rate(ShardDataset(d, labels=READ_SUBSET), frames)
        loader = make_loader(ShardDataset(d), batch_size=8, shuffle=False)
        c1 = time.process_time()
        seen = sum(batch.images.shape[0] for batch in loader)
        loader_cpu = time.process_time() - c1
        sizes = _shard_bytes(d, n_write)
    with tempfile.TemporaryDirectory() as d:
        generate(d, WorldConfig(seed=7, num_scenes=png_frames // 16 + 1, frames_per_scene=16), frames=png_frames,
                 shard_size=32, image_format="png")
        png = _read_rate(ShardDataset(d), frames)
        png_sizes = _shard_bytes(d, png_frames)
    return {"loaded_frames_per_s": every["per_s"], "loaded_ms_per_frame": every["ms_per_frame"],
            "loaded_frames_per_cpu_s": every["per_cpu_s"],
            "loaded_subset_labels": READ_SUBSET, "loaded_subset_frames_per_cpu_s": subset["per_cpu_s"],
            "loader_batch_size": 8, "loader_frames_per_cpu_s": round(seen / loader_cpu, 1),
            "written_frames_per_s": round(n_write / write_s, 2), "shard_kb_per_frame": sizes,
            "png": {"frames": png_frames, "shard_kb_per_frame": png_sizes["total"],
                    "loaded_frames_per_cpu_s": png["per_cpu_s"],
                    "size_vs_npz": round(png_sizes["total"] / sizes["total"], 2),
                    "read_time_vs_npz": round(every["per_cpu_s"] / png["per_cpu_s"], 2)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=40, help="frames to generate for the timing")
    p.add_argument("--read-frames", type=int, default=200, help="frames to read back from shards")
    p.add_argument("--png-frames", type=int, default=32, help="frames written again as PNG shards")
    args = p.parse_args()
    torch.set_num_threads(1)  # per-core numbers
    out = {"benchmark": "world", "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "load_average_1min": round(os.getloadavg()[0], 2),
           "cpu_count": os.cpu_count()}
    out |= bench_generate(args.frames)
    out |= bench_read(args.read_frames, args.png_frames)
    out["floors"] = {"generated_frames_per_s": 5, "loaded_frames_per_s": 100}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
