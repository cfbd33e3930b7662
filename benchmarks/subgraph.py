"""P2 — sub-graph training: a new head trained from the feature cache vs trained end to end on images.

Setup: a base HydraNet (``--preset``, 8 cameras) is trained for ``--base-steps`` on ``--base-tasks``.
An owner then adds ``--task`` (default ``drivable``) to it, two ways, on the same ``--frames`` frames:

- **full**: the usual way without sub-graph training: trunk, neck and the new head train end to end
  on images (``Trainer``); the frames are pre-rendered into memory, so no rendering is timed.
  ``full_all_tasks`` also times the network's normal training (every task, all of it) on the frames.
- **head-only from cache**: ``hydranet cache-features`` once (timed separately: size per frame,
  MB/s, frames/s), then only the new head trains on the cached fp16 features (``CacheTrainer``).

Both start from the same weights (same seed for the new head), use the same optimiser settings, and
run ``--epochs`` passes over the frames; epoch time = training seconds / epochs (one-off cache build
excluded, reported beside). The head-only path also runs for as many epochs as fit in the full
path's time (``head_only_same_time``). Each result's headline metric is measured on ``--eval-frames``
held-out frames (another world seed) through the whole model, as any checkpoint is evaluated.

Prints one JSON object::

    .venv/bin/python benchmarks/subgraph.py                 # ~3 min on 2 busy CPU cores
    .venv/bin/python benchmarks/subgraph.py --frames 64 --epochs 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def make_config(args: argparse.Namespace, tasks: list[str], steps: int) -> Any:
    from hydranet.train.config import config_from_dict

    grid = {"x_range": [-32.0, 32.0], "y_range": [-32.0, 32.0], "cell": 1.0}
    return config_from_dict({
        # The datasets are handed to the trainer directly; this section only has to be valid.
        "data": {"datasets": {"w": {"kind": "world", "frames": args.frames}}},
        "model": {"preset": args.preset, "setup": {"image_size": [args.height, args.width], "grid": grid},
                  "tasks": {t: {} for t in tasks}},
        "train": {"steps": steps, "batch_size": args.batch, "lr": args.lr, "warmup_steps": min(10, steps // 4),
                  "weight_decay": 0.01, "clip_grad_norm": 5.0, "log_every": max(1, steps), "seed": 0},
    }, "<benchmark>")


def fit(trainer: Any) -> float:
    """Wall seconds of ``Trainer.fit`` (setup of logger and loader, the steps, the final checkpoint)."""
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def loop_rate(trainer: Any) -> float:
    """Samples/s of the training loop alone, as the trainer logs it (no checkpoint write)."""
    return float(trainer.history[-1]["samples_per_s"])


def headline(model: torch.nn.Module, task: str, frames: list) -> dict[str, float]:
    from hydranet.eval.loop import dataset_batches, evaluate

    metrics = evaluate(model, dataset_batches(frames, batch_size=4), {task: model.task_objects[task]})[task]
    key = next(iter(metrics))
    return {"metric": key, "value": metrics[key]}


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--task", default="drivable", help="the new task added to the base network")
    p.add_argument("--base-tasks", default="depth,lanes,bev_semantic")
    p.add_argument("--base-steps", type=int, default=60)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--eval-frames", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workdir", default=None, help="where checkpoints and the cache go (default: a temp dir)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hydranet.checkpoint import load_checkpoint, trunk_hash
    from hydranet.model import create_model
    from hydranet.train.feature_cache import CachedFeatureDataset, FeatureCache
    from hydranet.train.feature_cache_writer import write_cache
    from hydranet.train.subgraph import CacheTrainer, load_base_weights, needed_levels
    from hydranet.train.trainer import Trainer
    from hydranet.world import SyntheticWorld, WorldConfig

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    device = torch.device(args.device)
    world = dict(setup={"image_size": (args.height, args.width), "grid": {"cell": 1.0}}, frames_per_scene=8,
                 lighting="day", fog=0.0)
    t0 = time.perf_counter()
    train_world = SyntheticWorld(WorldConfig(seed=11, num_scenes=math.ceil(args.frames / 8), **world))
    eval_world = SyntheticWorld(WorldConfig(seed=911, num_scenes=math.ceil(args.eval_frames / 8), **world))
    frames = [train_world[i] for i in range(args.frames)]
    eval_frames = [eval_world[i] for i in range(args.eval_frames)]
    render_s = time.perf_counter() - t0

    # 1. The base network the owner starts from.
    base_tasks = [t for t in args.base_tasks.split(",") if t]
    cfg = make_config(args, base_tasks, args.base_steps)
    torch.manual_seed(0)
    base = create_model(cfg.resolved_model())
    base_dir = work / "base"
    base_s = fit(Trainer(cfg, base, frames, base_dir, model_config=cfg.resolved_model().model_dump(mode="json"),
                         device=device, progress=False))

    # 2. Both ways of adding the new task, from the same starting weights.
    steps = args.epochs * math.ceil(args.frames / args.batch)
    new_cfg = make_config(args, [*base_tasks, args.task], steps)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        model = create_model(new_cfg.resolved_model())
        load_base_weights(model, base_dir, [args.task])
        return model

    mc = new_cfg.resolved_model().model_dump(mode="json")
    full = fresh()
    full_tr = Trainer(new_cfg, full, frames, work / "full", train_tasks=[args.task], frozen=[], model_config=mc,
                      device=device, progress=False)
    full_s = fit(full_tr)
    full_metric = headline(full, args.task, eval_frames)

    # Full training as usually run: every task, trunk, neck, fusion and all heads (epoch time only).
    every = fresh()
    every_s = fit(Trainer(new_cfg, every, frames, work / "every", model_config=mc, device=device, progress=False))
    every_metric = headline(every, args.task, eval_frames)

    cache_dir = work / "cache"
    manifest = write_cache(base.eval(), frames, cache_dir, trunk_hash=load_checkpoint(base_dir).state["trunk_hash"],
                           setup=train_world.setup,
                           batch_size=args.batch, device=device)
    cache = FeatureCache(cache_dir)
    head = fresh()
    cache.check_trunk(trunk_hash(head))
    data = CachedFeatureDataset(cache, [head.task_objects[args.task].label], needed_levels(head, [args.task]))
    head_tr = CacheTrainer(new_cfg, head, data, work / "head", train_tasks=[args.task],
                           frozen=["trunk", "neck", "fusion"], model_config=mc, device=device, progress=False)
    head_s = fit(head_tr)
    head_metric = headline(head, args.task, eval_frames)

    # 3. Head-only for the full path's wall time: what the same budget buys.
    same_epochs = max(args.epochs, int(full_s / max(1e-9, head_s / args.epochs)))
    same_cfg = make_config(args, [*base_tasks, args.task], same_epochs * math.ceil(args.frames / args.batch))
    same = fresh()
    same_s = fit(CacheTrainer(same_cfg, same, data, work / "same", train_tasks=[args.task],
                              frozen=["trunk", "neck", "fusion"], model_config=mc, device=device, progress=False))
    same_metric = headline(same, args.task, eval_frames)

    full_epoch, head_epoch = full_s / args.epochs, head_s / args.epochs
    result = {
        "benchmark": "subgraph", "device": str(device), "threads": args.threads, "preset": args.preset,
        "image_hw": [args.height, args.width], "cameras": len(frames[0].camera_names), "frames": args.frames,
        "eval_frames": args.eval_frames, "batch_size": args.batch, "epochs": args.epochs, "new_task": args.task,
        "base": {"tasks": base_tasks, "steps": args.base_steps, "seconds": round(base_s, 1)},
        "full": {"trains": "trunk + neck + new head, on images", "epoch_s": round(full_epoch, 3),
                 "samples_per_s": round(args.frames / full_epoch, 2), **full_metric},
        "head_only_from_cache": {"trains": "new head only, on cached features", "epoch_s": round(head_epoch, 3),
                                 "samples_per_s": round(args.frames / head_epoch, 2), **head_metric},
        "full_all_tasks": {"trains": "everything, all tasks, on images", "epoch_s": round(every_s / args.epochs, 3),
                           "samples_per_s": round(args.frames * args.epochs / every_s, 2), **every_metric},
        "speedup_epoch": round(full_epoch / head_epoch, 1),
        "speedup_epoch_vs_all_tasks": round(every_s / args.epochs / head_epoch, 1),
        # The same ratio for the training loop alone (fixed costs such as the checkpoint write excluded).
        "speedup_loop": round(loop_rate(head_tr) / loop_rate(full_tr), 1),
        "head_only_same_time": {"epochs": same_epochs, "seconds": round(same_s, 1), **same_metric},
        "cache": {"build_s": round(manifest["seconds"], 2), "frames_per_s": round(manifest["frames_per_s"], 2),
                  "mb_per_s": round(manifest["mb_per_s"], 2),
                  "disk_write_mb_per_s": round(manifest["write_mb_per_s"], 1),
                  "mb_per_frame": round(manifest["bytes_per_frame"] / 1e6, 3),
                  "features_mb_per_frame": round(manifest["estimate_bytes_per_frame"]["features"] / 1e6, 3),
                  "labels_mb_per_frame": round(manifest["estimate_bytes_per_frame"]["labels"] / 1e6, 3),
                  "break_even_epochs": round(manifest["seconds"] / max(1e-9, full_epoch - head_epoch), 2)},
        "render_s": round(render_s, 1),
    }
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
