"""Video — a temporal HydraNet (two-queue BEV memory + ConvGRU) vs the same network on single frames.

Setup: one synthetic world (``--scenes`` × ``--frames-per-scene``, stop-and-go ego motion on half the
scenes' worth of roads, dense traffic so objects occlude each other) is rendered once into memory. Both
models are the ``tiny`` preset with the BEV tasks ``objects3d`` and ``bev_semantic``; they differ only
in ``fusion.temporal``. Both train with ``ClipTrainer`` on the *same clips in the same order* (same
seed, ``--steps`` steps of ``--batch`` clips × ``--clip`` frames): the single-frame model runs each
frame alone, the temporal one carries its memory through the clip (truncated BPTT).

On a busy 2-core machine one model at the default size takes ~5 minutes: ``--model single_frame`` and
``--model temporal`` with the same ``--save DIR`` run them as two commands (each well under 10 minutes);
the second one finds the first's result in DIR and prints the comparison.

Evaluation: held-out scenes of another world seed, each streamed whole through each model
(``hydranet.eval.sequence``): nuScenes mAP and mAVE (``ave``, m/s), occlusion persistence
(``occluded_recall``), ``flicker``, mATE (``mate``, m: how well a single frame localises, which bounds velocity
read from two positions ``dt`` apart to about ``sqrt(2) * mate / dt``), plus the velocity head's error at the
true object cells, and the same detections tracked over each clip (``hydranet.eval.tracking``: velocity read
from each box's track, ``mave_tracked``, with the tracker's CPU time per frame); latency per
frame at ``--latency-size`` (batch 1, median of ``--latency-frames``, the state carried, both architectures
interleaved in one process, best of ``--latency-rounds``; wall clock and CPU time) and the state's memory. Goals
(issue 13): mAVE <= 0.5x single-frame, occluded recall and flicker clearly better, mAP not worse, latency <= 1.2x
(judged on CPU time at one thread, where it is the frame's own work, else on the wall clock); ``goals`` also
judges velocity from video as a car runs it, the memory's detections tracked (``mave_tracked_ratio`` against the
single-frame head, latency with the tracker's time), and shows tracking alone on the single-frame model. Prints
one JSON object::

    .venv/bin/python benchmarks/temporal.py --steps 60        # ~8 min on 2 busy CPU cores

**From the reference model** (``--from zoo:tiny-world``): both models are the reference network (its
trunk, camera-to-BEV fusion and the two BEV heads, at its 96x192 8-camera setup and 1 m grid), loaded
from its weights; the temporal one adds the memory (the only modules that start untrained). Both are
then trained the same ``--steps`` on the same clips at ``--lr``; ``--freeze-trunk`` keeps the image
trunk of both fixed at the reference's weights (the memory then learns on features that already
localise objects)::

    .venv/bin/python benchmarks/temporal.py --from zoo:tiny-world --steps 300 --lr 1e-3 --correlation-radius 3
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

TASKS = ("objects3d", "bev_semantic")
TEMPORAL_ONLY_ARGS = ("correlation_radius", "push_every_frames")
# True-speed bins (m/s) of the velocity error at the true cells (the world moves objects at walking pace and at
# town-traffic speeds).
SPEED_BINS = ((0.0, 0.5), (0.5, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 12.0), (12.0, float("inf")))


class InMemory(Dataset):
    """Rendered samples kept in memory, so no rendering is timed or repeated (keeps the world's scene layout)."""

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        return self.samples[i]


def render(seed: int, scenes: int, per_scene: int, args: argparse.Namespace) -> InMemory:
    from hydranet.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(seed=seed, num_scenes=scenes, frames_per_scene=per_scene,
                                       setup={"image_size": (args.height, args.width), "grid": {"cell": 1.0}},
                                       layout="straight", lighting="day",
                                       fog=0.0, traffic_density=2.0, ego_stop_and_go=True))
    return InMemory([world[i] for i in range(len(world))])


def make_config(args: argparse.Namespace, temporal: bool) -> Any:
    from hydranet.train.config import config_from_dict

    reference = reference_model_config(args.start) if args.start else {}
    # The shipped configs/temporal.yaml memory: entries 0.2 s apart move a 10 m/s car 2 cells on the 1 m grid.
    fusion: dict[str, Any] = {"temporal": {"time_queue": args.time_queue, "space_queue": 2,
                                           "push_every_frames": args.push_every_frames,
                                           "push_every_metres": 2.0, "correlation_radius": args.correlation_radius}
                              if temporal else None}
    return config_from_dict({
        "data": {"datasets": {"w": {"kind": "world", "frames": 1}}},  # the data is handed to the trainer
        "model": {"preset": "tiny", **{k: reference[k] for k in ("bev_channels", "neck", "trunk") if k in reference},
                  "fusion": reference.get("fusion", {}) | fusion,
                  "setup": {"image_size": [args.height, args.width],
                            "grid": {"x_range": [-32.0, 32.0], "y_range": [-32.0, 32.0], "cell": 1.0}},
                  # Velocity weighs as much as the other box terms (the task default, 0.2, suits long runs).
                  # Both models learn and are scored on every object on the grid, seen now or not
                  # (min_visible 0): remembering a hidden object is what the memory is for.
                  "tasks": {"objects3d": {"code_weights": {"velocity": 1.0}, "min_visible": 0.0},
                            "bev_semantic": {}}},
        "train": {"steps": args.steps, "batch_size": args.batch, "lr": args.lr, "optimizer": args.optimizer,
                  "warmup_steps": min(10, args.steps // 5),
                  "weight_decay": 0.01, "clip_grad_norm": 5.0, "log_every": max(1, args.steps), "seed": args.seed,
                  "clip": {"length": args.burn_in + args.clip, "burn_in": args.burn_in}},
    }, "<benchmark>")


@functools.cache
def zoo_entry(name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A zoo entry's ``(model_config, weights)``, read and verified once per process (every model built from it
    and the image size all come from the same entry)."""
    from hydranet.model.zoo import pretrained_weights

    model_config, weights, _ = pretrained_weights(name.removeprefix("zoo:"))
    return model_config, weights


def reference_model_config(name: str) -> dict[str, Any]:
    """The ``ModelConfig`` dict a zoo entry was trained with (its preset, fusion, setup, tasks)."""
    return zoo_entry(name)[0]


def load_reference(model: Any, name: str, freeze_trunk: bool) -> dict[str, list[str]]:
    """Copy the zoo entry's weights into ``model`` wherever a parameter of the same name and shape exists;
    returns the names left untrained (the memory) and the reference's names not used (its other heads)."""
    weights = zoo_entry(name)[1]
    own = model.state_dict()
    used = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(used, strict=False)
    if freeze_trunk:
        for n, prm in model.named_parameters():
            if n.startswith("trunk."):
                prm.requires_grad_(False)
    return {"untrained": sorted(k for k in own if k not in used), "unused": sorted(k for k in weights if k not in used)}


def train(args: argparse.Namespace, temporal: bool, data: InMemory, out: Path) -> tuple[Any, float]:
    from hydranet.model import create_model
    from hydranet.train.clips import ClipTrainer

    cfg = make_config(args, temporal)
    torch.manual_seed(args.seed)
    model = create_model(cfg.resolved_model())
    if args.start:
        loaded = load_reference(model, args.start, args.freeze_trunk)
        print(f"{'temporal' if temporal else 'single_frame'}: from {args.start}, untrained "
              f"{sorted({k.rsplit('.', 2)[0] for k in loaded['untrained']})}", file=sys.stderr)
    trainer = ClipTrainer(cfg, model, data, out, progress=False, model_config=cfg.resolved_model().model_dump())
    t0 = time.perf_counter()
    trainer.fit()
    return model.eval(), time.perf_counter() - t0


class FrameProbe:
    """Diagnostics beside the suite metrics, from each streamed frame's raw outputs:

    - ``velocity_error_at_gt``: mean |v_pred - v_gt| (m/s) of the velocity head read at every moving-class
      object's true BEV cell (cars, trucks, pedestrians inside the grid): velocity quality without the
      detector's recall in the way, which at benchmark budgets is too low for mAVE to say much;
    - a second objects3d metric at the decode threshold (0.1) instead of the drawing one (0.3);
    - the objects3d metric of the same detections tracked over each clip (``hydranet.eval.tracking``:
      velocity from each box's track instead of the head, scores from the track's), and the tracker's CPU time
      per frame;
    - ``velocity_error_at_gt_by_speed``: the same error per bin of the true speed (``SPEED_BINS``), with each bin's
      object count and mean predicted speed: which motions the head reads;
    - the head's boxes scored on the objects a camera sees now (``*_seen_now``; visible fraction >= 0.05), as
      nuScenes scores only the boxes its sensors hit: whether what the memory only remembers weighs in its mAVE.
    """

    def __init__(self, model: Any) -> None:
        from hydranet.eval.tracking import SequenceTrackers
        from hydranet.metrics.detection3d import Detection3DMetric
        from hydranet.metrics.temporal import TemporalDetection3DMetric

        self.task = model.task_objects["objects3d"]
        self.errors: list[float] = []
        self.speeds: list[float] = []  # the true speed of each object of ``errors`` (m/s)
        self.predicted_speeds: list[float] = []
        g = self.task.setup.grid
        self.low = TemporalDetection3DMetric(self.task.classes, score_threshold=0.1,
                                             grid_extent=(g.x_range[0], g.x_range[1], g.y_range[0], g.y_range[1]))
        self.tracked = self.task.make_metric()
        self.seen_now = Detection3DMetric(self.task.classes, region=(g.x_range, g.y_range), min_visible=0.05)
        self.trackers = SequenceTrackers()  # a new clip starts with no tracks
        self.track_cpu_s: list[float] = []

    def __call__(self, frame: Any) -> None:
        """An ``EvalFrame`` of a streamed clip (batch 1): its raw objects3d outputs and labels."""
        from hydranet.eval.loop import with_sequence
        from hydranet.tasks.objects3d import encode_objects3d

        batch = frame.batch
        o = {k: v[None] for k, v in frame.outputs["objects3d"].items()}  # the batch of one frame
        targets = self.task.targets(batch)
        self.low.update(self.task.decode(o, batch), with_sequence(targets, batch))
        self.seen_now.update([frame.decoded["objects3d"]], targets)
        c0 = time.process_time()
        tracked = self.trackers([frame.decoded["objects3d"]], batch.scene_id, batch.frame_index, batch.T_world_from_ego,
                                batch.timestamp)
        self.track_cpu_s.append(time.process_time() - c0)
        self.tracked.update(tracked, with_sequence(targets, batch))
        for b, t in enumerate(targets):
            if t is None:
                continue
            moving = t["classes"] <= 2  # car, truck, pedestrian (cones and lights do not move)
            sub = {k: v[moving] for k, v in t.items() if isinstance(v, torch.Tensor) and len(v) == len(moving)}
            hw = tuple(o["heatmap"].shape[-2:])
            enc = encode_objects3d([sub], self.task.setup.grid, hw, len(self.task.classes), 0.1, 0)
            if len(enc["ys"]) == 0:
                continue
            pred = o["velocity"][b][:, enc["ys"], enc["xs"]].T
            self.errors += (pred - enc["reg"][:, 8:10]).norm(dim=-1).tolist()
            self.speeds += enc["reg"][:, 8:10].norm(dim=-1).tolist()
            self.predicted_speeds += pred.norm(dim=-1).tolist()

    def result(self) -> dict[str, Any]:
        low = self.low.compute()
        tracked = self.tracked.compute()
        seen = self.seen_now.compute()
        error, speed, predicted = (np.array(x, np.float64) for x in (self.errors, self.speeds, self.predicted_speeds))
        by_speed = {}
        for slowest, fastest in SPEED_BINS:
            inside = (speed >= slowest) & (speed < fastest)
            error_mean, speed_mean = (float(x[inside].mean()) if inside.any() else None for x in (error, predicted))
            by_speed[f"{slowest:g}-{fastest:g}"] = {"objects": int(inside.sum()), "error": error_mean,
                                                    "predicted_speed": speed_mean}
        return {"velocity_error_at_gt": float(np.mean(self.errors)) if self.errors else float("nan"),
                "velocity_error_at_gt_by_speed": by_speed,
                "objects_scored": len(self.errors), "map_at_0.1": low["map"], "mave_at_0.1": low["ave"],
                "occluded_recall_at_0.1": low["occluded_recall"], "flicker_at_0.1": low["flicker"],
                "mave_tracked": tracked["ave"], "map_tracked": tracked["map"], "flicker_tracked": tracked["flicker"],
                "occluded_recall_tracked": tracked["occluded_recall"],
                "map_seen_now": seen["map"], "mave_seen_now": seen["ave"], "mate_seen_now": seen["ate"],
                "tracker_median_cpu_s": float(np.median(self.track_cpu_s)) if self.track_cpu_s else 0.0}


@torch.no_grad()
def latency(model: Any, data: InMemory, frames: int) -> dict[str, float]:
    """Median seconds per frame of streaming (batch 1, state carried), wall clock (``median_s``) and the
    process's CPU time (``median_cpu_s``), and the state's bytes."""
    from hydranet.data.sample import collate
    from hydranet.eval.loop import EagerPredictor, Streamer

    stream = Streamer(EagerPredictor(model))
    batches = [collate([data[i]]) for i in range(min(frames + 2, len(data)))]
    wall, cpu = [], []
    for k, b in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        stream(b, list(TASKS))
        if k >= 2:  # warm-up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    state = stream.state
    return {"median_s": float(np.median(wall)), "median_cpu_s": float(np.median(cpu)),
            "state_bytes": int(state.nbytes()) if state is not None else 0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per model (the same for both)")
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--clip", type=int, default=4, help="frames per clip that learn (truncated-BPTT horizon)")
    p.add_argument("--burn-in", type=int, default=0,
                   help="frames before each clip run without gradient to fill the memory as in streaming")
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--frames-per-scene", type=int, default=16)
    p.add_argument("--eval-scenes", type=int, default=3)
    p.add_argument("--eval-frames-per-scene", type=int, default=16)
    p.add_argument("--latency-frames", type=int, default=8)
    p.add_argument("--latency-rounds", type=int, default=5,
                   help="latency rounds, the two models interleaved; each model's best round counts")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw",
                   help="train.optimizer of both models (muon: Muon for the hidden layers' kernels, docs/train.md)")
    p.add_argument("--latency-size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"),
                   help="image size of the latency measurement (default: the tiny preset's 128x256)")
    p.add_argument("--correlation-radius", type=int, default=0,
                   help="the temporal memory's cost-volume radius in cells (0 = no correlation)")
    p.add_argument("--push-every-frames", type=int, default=2,
                   help="the memory's time-queue period in frames (entry ages up to time_queue x this)")
    p.add_argument("--time-queue", type=int, default=2,
                   help="entries of the memory's time queue (the motion read-out compares the current map with each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from", dest="start", default=None,
                   help="start both models from this zoo entry's weights (e.g. zoo:tiny-world), at its setup")
    p.add_argument("--freeze-trunk", action="store_true", help="--from: keep the image trunk fixed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--model", choices=["both", "single_frame", "temporal"], default="both",
                   help="train/evaluate one model only (its result goes to --save)")
    p.add_argument("--save", type=Path, default=None, help="directory for per-model results (to combine runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.start:  # the reference's own image size: its weights were trained at it
        args.height, args.width = reference_model_config(args.start)["setup"]["image_size"]
    from hydranet.eval.loop import evaluate_clips

    t0 = time.perf_counter()
    train_data = render(1, args.scenes, args.frames_per_scene, args)
    eval_data = render(1001, args.eval_scenes, args.eval_frames_per_scene, args)
    render_s = time.perf_counter() - t0
    f = args.eval_frames_per_scene
    clips = [list(range(s * f, (s + 1) * f)) for s in range(args.eval_scenes)]
    results: dict[str, Any] = {}
    if args.model != "both" and args.save is None:
        p.error("--model single_frame|temporal needs --save DIR (where the two halves meet)")
    todo = [(n, n == "temporal") for n in ("single_frame", "temporal") if args.model in ("both", n)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, temporal in todo:
            model, train_s = train(args, temporal, train_data, Path(tmp) / name)
            probe = FrameProbe(model)
            metrics = evaluate_clips(model, eval_data, clips, list(TASKS), on_frame=probe)
            o = metrics["objects3d"]
            results[name] = {
                "train_s": round(train_s, 1), "map": o["map"], "mave": o["ave"], "mate": o["ate"],
                "occluded_recall": o["occluded_recall"],
                "occluded_objects": o["occluded_objects"], "visible_recall": o["visible_recall"],
                "flicker": o["flicker"], "bev_semantic_miou": metrics["bev_semantic"].get("miou"),
                "params": sum(p.numel() for p in model.parameters()), **probe.result()}
    # What a trained half depends on (latency settings do not: latency is measured below, on fresh models).
    same = {k: v for k, v in vars(args).items() if k not in ("out", "model", "save", "threads", "latency_rounds")}
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, r in results.items():
            (args.save / f"{name}.json").write_text(json.dumps({"args": same, "result": r}, default=float))
        for name in ("single_frame", "temporal"):
            f = args.save / f"{name}.json"
            if name not in results and f.is_file():
                saved = json.loads(f.read_text())
                # The single-frame model does not depend on the memory's own settings.
                ignore = TEMPORAL_ONLY_ARGS if name == "single_frame" else ()
                if {k: v for k, v in saved["args"].items() if k not in ignore} != \
                        {k: v for k, v in same.items() if k not in ignore}:
                    p.error(f"{f} was run with other settings {saved['args']}: rerun it with these")
                results[name] = saved["result"]
    if len(results) < 2:
        partial = {"benchmark": "temporal", "partial": True, "args": same, "results": results,
                   "render_s": round(render_s, 1), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(partial, indent=1, default=float))
        return partial
    # Latency in this one process, the two architectures interleaved round by round (weights do not change
    # the cost, so fresh models serve when a half was trained in another command); best round of each.
    from hydranet.model import create_model

    lh, lw = args.latency_size
    frames = render(2002, 1, args.latency_frames + 2, argparse.Namespace(height=lh, width=lw))
    nets = {n: create_model(make_config(argparse.Namespace(**{**vars(args), "height": lh, "width": lw}),
                                        n == "temporal").resolved_model()).eval() for n in results}
    for n in nets:  # a half trained in another command carries its own run's latency: measured again here
        results[n].pop("median_s", None)
        results[n].pop("median_cpu_s", None)
    for _ in range(args.latency_rounds):
        for n, net in nets.items():
            lat = latency(net, frames, args.latency_frames)
            for key in ("median_s", "median_cpu_s"):  # the best round of each clock
                results[n][key] = min(results[n].get(key, math.inf), lat[key])
            results[n]["state_bytes"] = lat["state_bytes"]
    s, t = results["single_frame"], results["temporal"]

    def ratio(a: float, b: float) -> float | None:
        return a / b if b and np.isfinite(a) and np.isfinite(b) else None

    # Velocity from video as a car would run it: the memory's detections tracked over the frames (its latency
    # includes the tracker's CPU time); beside it the memory's own velocity head and tracking alone.
    tracked_cpu = t["median_cpu_s"] + t.get("tracker_median_cpu_s", 0.0)
    goals = {
        "mave_ratio": ratio(t["mave"], s["mave"]), "mave_goal": "<= 0.5",
        "mave_tracked_ratio": ratio(t["mave_tracked"], s["mave"]),
        "mave_single_frame_tracked_ratio": ratio(s["mave_tracked"], s["mave"]),
        # The tracked boxes carry their tracks' scores (hydranet.eval.tracking), so mAP, flicker and occluded
        # recall change with tracking too: judged against the single frame's own boxes.
        "map_tracked_delta": t["map_tracked"] - s["map"],
        "flicker_tracked_delta": t["flicker_tracked"] - s["flicker"],
        "occluded_recall_tracked_delta": t["occluded_recall_tracked"] - s["occluded_recall"],
        "latency_cpu_ratio_tracked": ratio(tracked_cpu, s["median_cpu_s"]),
        "velocity_error_at_gt_ratio": ratio(t["velocity_error_at_gt"], s["velocity_error_at_gt"]),
        "occluded_recall_delta": t["occluded_recall"] - s["occluded_recall"], "occluded_recall_goal": "> 0",
        "flicker_delta": t["flicker"] - s["flicker"], "flicker_goal": "< 0",
        "map_delta": t["map"] - s["map"], "map_goal": ">= 0",
        "latency_ratio": ratio(t["median_s"], s["median_s"]),
        "latency_cpu_ratio": ratio(t["median_cpu_s"], s["median_cpu_s"]), "latency_goal": "<= 1.2",
    }
    # nuScenes scores a class without any true positive as error 1.0: with (almost) no detections mAVE
    # says nothing about velocity, and the ratio is not a result.
    mave_measurable = min(s["map"], t["map"]) >= 0.01
    goals["mave_measurable"] = mave_measurable
    # At one thread the CPU time is the frame's own work; the wall clock of a shared machine adds whatever else
    # ran (docs/decisions.md: back-to-back wall ratios of the same two models spread over ±0.08, CPU ±0.01).
    goals["latency_judged_by"] = "cpu" if args.threads == 1 else "wall"
    goals["latency_judged"] = goals["latency_cpu_ratio"] if args.threads == 1 else goals["latency_ratio"]
    goals["met"] = {
        "mave": (goals["mave_ratio"] is not None and goals["mave_ratio"] <= 0.5) if mave_measurable else None,
        "mave_tracked": (goals["mave_tracked_ratio"] is not None and goals["mave_tracked_ratio"] <= 0.5
                         and goals["latency_cpu_ratio_tracked"] is not None
                         and goals["latency_cpu_ratio_tracked"] <= 1.2) if mave_measurable else None,
        "occluded_recall": goals["occluded_recall_delta"] > 0, "flicker": goals["flicker_delta"] < 0,
        "map": goals["map_delta"] >= 0, "map_tracked": goals["map_tracked_delta"] >= 0,
        "flicker_tracked": goals["flicker_tracked_delta"] < 0,
        "occluded_recall_tracked": goals["occluded_recall_tracked_delta"] > 0,
        "latency": goals["latency_judged"] is not None and goals["latency_judged"] <= 1.2}
    report = {"benchmark": "temporal", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "render_s": round(render_s, 1), "train_frames": len(train_data), "eval_frames": len(eval_data),
              "single_frame": s, "temporal": t, "goals": goals, "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(report, indent=1, default=float)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
