"""Synthetic-world throughput, one core: 8-camera frames generated per second (render + all labels)
at the default 8 x 128 x 256, and frames read back per second from shards written by
`hydranet generate` (hydranet.data.shards.ShardDataset). Prints one JSON object.

Both wall-clock (`*_per_s`) and CPU-time (`*_per_cpu_s`) rates are reported: on a shared machine
(load average > cores) the wall-clock rate measures the neighbours, the CPU-time rate of this
single-threaded process is the per-core figure.

    .venv/bin/python benchmarks/world.py [--frames 40] [--read-frames 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

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


def bench_read(frames: int) -> dict:
    try:
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
        ds = ShardDataset(d)
        ds[0]
        t1, c1 = time.perf_counter(), time.process_time()
        for k in range(frames):
            ds[k % len(ds)]
        dt, cpu = time.perf_counter() - t1, time.process_time() - c1
        return {"loaded_frames_per_s": round(frames / dt, 1), "loaded_ms_per_frame": round(1000 * dt / frames, 2),
                "loaded_frames_per_cpu_s": round(frames / cpu, 1),
                "written_frames_per_s": round(n_write / write_s, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=40, help="frames to generate for the timing")
    p.add_argument("--read-frames", type=int, default=200, help="frames to read back from shards")
    args = p.parse_args()
    torch.set_num_threads(1)  # per-core numbers
    out = {"benchmark": "world", "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "load_average_1min": round(os.getloadavg()[0], 2),
           "cpu_count": os.cpu_count()}
    out |= bench_generate(args.frames)
    out |= bench_read(args.read_frames)
    out["floors"] = {"generated_frames_per_s": 5, "loaded_frames_per_s": 100}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
