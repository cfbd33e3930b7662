"""Auto-label quality: what does seeing the whole clip buy? (issue 14, "measure auto-label quality")

The clip machinery (``hydranet.engine.track``: 3D tracking + smoothing + gap filling, light-state
voting) is scored against the world's ground truth with each task's own metric, single-frame vs
clip-smoothed, on the same teacher outputs. Two teachers:

- ``simulated``: a controlled teacher made from the ground truth with known faults — each object
  missed with probability ``--miss`` per frame (occlusion-like gaps), centres jittered by
  ``--jitter`` metres, sizes by 10 %, yaw by 0.15 rad, ``--false-pos`` spurious boxes per frame;
  each light missed with ``--miss``, its state flipped with ``--flip``, box corners jittered by 5 %
  of the box size.
  It isolates the smoothing itself from how good a trained teacher is.
- ``--teacher CKPT`` (a checkpoint or a zoo name, e.g. ``zoo:tiny-world``): a trained HydraNet as the
  teacher, run over every frame of each scored frame's clip (``hydranet.engine.quality.autolabel_quality``,
  what ``hydranet autolabel-quality`` prints). The world is rendered with the teacher's own setup, from a
  seed it never saw, in its natural lighting mix (day, dusk, night). Three columns per task: the teacher's
  own outputs as ``hydranet eval`` scores them, single-frame labels, clip-smoothed labels.

Prints one JSON object::

    python benchmarks/autolabel.py --scenes 6 --frames-per-scene 20     # ~2 min on 2 busy cores
    python benchmarks/autolabel.py --teacher zoo:tiny-world --scenes 12 --frames-per-scene 20 --scored 48
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from typing import Any

import torch

from hydranet.data.sample import LIGHT_STATES


def simulated_teacher(labels: list[dict], args: argparse.Namespace, gen: torch.Generator) -> dict[str, list]:
    """Decoded-output lists (objects3d, traffic_light) of a faulty teacher, from ground truth."""
    objs, lights = [], []
    for lab in labels:
        o = lab["objects3d"]
        keep = torch.rand(len(o["boxes"]), generator=gen) >= args.miss
        boxes = o["boxes"][keep].clone()
        m = len(boxes)
        boxes[:, :2] += torch.randn(m, 2, generator=gen) * args.jitter
        boxes[:, 3:6] *= 1 + 0.1 * torch.randn(m, 3, generator=gen)
        boxes[:, 6] += 0.15 * torch.randn(m, generator=gen)
        scores = 0.4 + 0.5 * torch.rand(m, generator=gen)
        classes = o["classes"][keep]
        n_fp = int(torch.poisson(torch.tensor(args.false_pos), generator=gen))
        fp = torch.cat([torch.rand(n_fp, 2, generator=gen) * 50 - 25, torch.full((n_fp, 1), 0.8),
                        torch.tensor([[4.5, 1.9, 1.6, 0.0]]).repeat(n_fp, 1)], 1)
        objs.append({"boxes": torch.cat([boxes, fp]), "velocity": torch.zeros(m + n_fp, 2),
                     "classes": torch.cat([classes, torch.zeros(n_fp, dtype=torch.long)]),
                     "scores": torch.cat([scores, 0.3 + 0.2 * torch.rand(n_fp, generator=gen)])})
        t = lab["traffic_light"]
        keep = torch.rand(len(t["boxes"]), generator=gen) >= args.miss
        state = t["state"][keep].clone()
        flip = torch.rand(len(state), generator=gen) < args.flip
        state[flip] = (state[flip] + 1 + torch.randint(0, len(LIGHT_STATES) - 1, (int(flip.sum()),),
                                                       generator=gen)) % len(LIGHT_STATES)
        k = int(keep.sum())
        b = t["boxes"][keep]
        size = (b[:, 2:] - b[:, :2]).repeat(1, 2)
        lights.append({"boxes": b + 0.05 * size * torch.randn(k, 4, generator=gen), "camera": t["camera"][keep],
                       "state": state, "lane": t["lane"][keep], "scores": 0.4 + 0.5 * torch.rand(k, generator=gen)})
    return {"objects3d": objs, "traffic_light": lights}


class _Teacher:
    """``label_clip`` needs only the teacher's task objects (names, labels; metrics need the BEV grid of the
    setup: a tiny HydraNet with the two tracked tasks provides them)."""

    def __init__(self, setup: Any):
        from hydranet.model import ModelConfig, create_model

        cfg = ModelConfig.preset("tiny", setup=setup, tasks={"objects3d": {}, "traffic_light": {}})
        self.task_objects = create_model(cfg).task_objects


REAL_KEYS = {"objects3d": ("map", "ap@0.5m", "ap@1m", "ate", "aoe", "ave"),
             "traffic_light": ("balanced_accuracy", "accuracy", "recall", "precision"),
             "detection2d": ("map", "ap50"), "drivable": ("miou",), "bev_semantic": ("miou",)}


def real_teacher(args: argparse.Namespace) -> dict[str, Any]:
    """Auto-label quality with a trained teacher (``--teacher``): its own outputs, single-frame and
    clip-smoothed labels on ``--scored`` frames spread evenly over a held-out world of its setup."""
    from hydranet.engine.autolabel import AutoLabelConfig
    from hydranet.engine.pool import load_mining_model
    from hydranet.engine.quality import autolabel_quality
    from hydranet.eval import spread_evenly
    from hydranet.world import SyntheticWorld
    from hydranet.world.config import load_world_config

    model = load_mining_model(args.teacher)
    world = SyntheticWorld(load_world_config({"seed": args.world_seed, "num_scenes": args.scenes,
                                              "frames_per_scene": args.frames_per_scene, "setup": model.setup,
                                              "lighting": "random"}))
    idx = spread_evenly(args.scored, len(world))
    cfg = AutoLabelConfig(clip_radius=args.clip_radius, min_score=args.min_confidence,
                          min_confidence=args.min_confidence, window=args.window)
    res = autolabel_quality(model, world, idx, cfg)
    modes = ("teacher", "single_frame", "clip_smoothed")
    out: dict[str, Any] = {"benchmark": "autolabel", "teacher": args.teacher, "config": vars(args),
                           "world": {"seed": args.world_seed, "lighting": "random"}, "frames": res["frames"],
                           "clips": res["clips"], "autolabel_config": {k: getattr(cfg, k) for k in (
                               "clip_radius", "min_score", "min_confidence", "window", "velocity_window",
                               "max_gap", "gate_m")}}
    for mode in modes:
        out[mode] = {t: {k: _num(res[mode][t].get(k)) for k in keys} for t, keys in REAL_KEYS.items()
                     if t in res[mode]}
    out["delta"] = {t: {k: _diff(out["clip_smoothed"][t][k], out["single_frame"][t][k]) for k in keys}
                    for t, keys in REAL_KEYS.items() if t in out["single_frame"]}
    return out


def _num(x: Any) -> float | None:
    return None if x is None or math.isnan(float(x)) else round(float(x), 4)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def main() -> None:
    from hydranet.engine.autolabel import AutoLabelConfig, label_clip
    from hydranet.setup import Rig, Setup, default_rig
    from hydranet.world import SyntheticWorld
    from hydranet.world.config import load_world_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--frames-per-scene", type=int, default=20)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--miss", type=float, default=0.25)
    p.add_argument("--jitter", type=float, default=0.5)
    p.add_argument("--false-pos", type=float, default=1.0)
    p.add_argument("--flip", type=float, default=0.15)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default=None, help="a trained teacher (checkpoint or zoo name) instead of the "
                                                    "simulated one")
    p.add_argument("--scored", type=int, default=48, help="--teacher: frames scored, spread over the world")
    p.add_argument("--world-seed", type=int, default=7100, help="--teacher: the held-out world's seed")
    p.add_argument("--clip-radius", type=int, default=10, help="--teacher: frames each side the teacher sees")
    p.add_argument("--min-confidence", type=float, default=0.1, help="--teacher: label and evidence cut-off")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.teacher is not None:
        print(json.dumps(real_teacher(args), indent=1))
        return
    size = (args.height, args.width)
    two = Rig(cameras=tuple(c for c in default_rig(size).cameras if c.name in ("main", "wide")))
    setup = Setup(image_size=size, rigs={"two": two})
    world = SyntheticWorld(load_world_config({"seed": 4242 + args.seed, "num_scenes": args.scenes,
                                              "frames_per_scene": args.frames_per_scene, "setup": setup,
                                              "fog": 0.0}))
    teacher = _Teacher(setup)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = AutoLabelConfig(min_score=0.0, min_confidence=0.0, window=args.window)
    modes = {"single_frame": replace(cfg, smoothing=False), "clip_smoothed": cfg}
    metrics = {m: {n: t.make_metric() for n, t in teacher.task_objects.items()} for m in modes}
    per = args.frames_per_scene
    for s in range(args.scenes):
        samples = [world[s * per + f] for f in range(per)]
        truth = [x.labels for x in samples]
        decoded = simulated_teacher(truth, args, gen)
        for mode, c in modes.items():
            labels = label_clip(teacher, samples, decoded, c)
            for f in range(per):
                for name in teacher.task_objects:
                    metrics[mode][name].update([labels[f][name]], [truth[f][name]])
    keys = {"objects3d": ("map", "ap@0.5m", "ap@1m", "ate", "aoe"),
            "traffic_light": ("accuracy", "recall", "precision", "correct_recall")}
    out = {"benchmark": "autolabel", "teacher": "simulated", "config": vars(args),
           "frames": args.scenes * per}
    for mode in modes:
        out[mode] = {}
        for name, m in metrics[mode].items():
            r = m.compute()
            out[mode][name] = {k: _num(r[k]) for k in keys[name]}
    out["delta"] = {name: {k: (None if out["single_frame"][name][k] is None or out["clip_smoothed"][name][k] is None
                               else round(out["clip_smoothed"][name][k] - out["single_frame"][name][k], 4))
                           for k in keys[name]} for name in keys}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
