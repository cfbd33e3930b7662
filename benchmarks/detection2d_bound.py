"""How precisely must a 2D box sit for the demo's 2D mAP goal? The COCO mAP of boxes with only localisation error.

An oracle detector -- every ground-truth box of held-out frames found, with its true class and camera -- whose
only error is localisation: each box's centre moved by Gaussian noise of ``sigma_centre`` pixels per axis and
its width and height each scaled by ``exp(N(0, sigma_size))`` (a log-normal error, ~``sigma_size`` relative).
Scored twice with the task's own COCO AP@[.5:.95] (``Detection2DMetric``, the task's ``min_visible``): with
each box's score its IoU with its own ground truth (``map``: the best ranking a detector can give its boxes, so
a detector that localises this well and also misses objects or fires on background scores no more), and with
random scores (``map_random``: a confidence that says nothing about the box's placement). At several input
sizes, the world rendered at each (the same scenes: boxes scale with the image, the pixel noise does not).
Prints one JSON object.

    .venv/bin/python benchmarks/detection2d_bound.py [--scenes 48] [--sizes 96x192,128x256,256x512]

The COCO matching and AP follow pycocotools (``hydranet.metrics.detection2d``); the noise model is the usual
one of box-regression error studies (centre offset and log-size error, as in the YOLO/CenterNet box
parametrisations).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from hydranet.metrics import Detection2DMetric
from hydranet.metrics.detection2d import box_iou
from hydranet.tasks.detection2d import Detection2DOptions
from hydranet.train.config import load_config
from hydranet.train.demo import default_demo_config
from hydranet.world import SyntheticWorld, WorldConfig


def eval_world() -> dict:
    """The demo's held-out world as ``configs/demo.yaml`` declares it (``data.eval.world``: seed, layout and light
    mix, frames per scene)."""
    return dict(load_config(default_demo_config(), []).data.eval.world)


def labels(scenes: int, size: tuple[int, int]) -> tuple[list[dict[str, torch.Tensor]], tuple[str, ...]]:
    """The ``detection2d`` labels of ``scenes`` scenes of the demo's held-out world rendered at ``size`` (H, W),
    and its class names."""
    world = SyntheticWorld(WorldConfig.model_validate({**eval_world(), "num_scenes": scenes,
                                                       "setup": {"image_size": size}}))
    return [world[i].labels["detection2d"] for i in range(len(world))], world.setup.classes["detection2d"]


def noisy_map(targets: list[dict[str, torch.Tensor]], classes: tuple[str, ...], cameras: int, min_visible: float,
              sigma_centre: float, sigma_size: float, rng: np.random.Generator) -> dict[str, float]:
    """COCO ``map``/``ap50``/``ap75`` of the ground-truth boxes with the noise above (centre ``N(0, sigma_centre)``
    px per axis, width and height times ``exp(N(0, sigma_size))``), each scored by its IoU with its own ground
    truth, and ``map_random`` of the same boxes scored uniformly at random in [0.5, 1]."""
    ranked = Detection2DMetric(classes=classes, num_cameras=cameras, min_visible=min_visible)
    random = Detection2DMetric(classes=classes, num_cameras=cameras, min_visible=min_visible)
    for t in targets:
        b = t["boxes"].double().numpy()
        n = len(b)
        cx = (b[:, 0] + b[:, 2]) / 2 + rng.normal(0.0, sigma_centre, n)
        cy = (b[:, 1] + b[:, 3]) / 2 + rng.normal(0.0, sigma_centre, n)
        w = (b[:, 2] - b[:, 0]) * np.exp(rng.normal(0.0, sigma_size, n))
        h = (b[:, 3] - b[:, 1]) * np.exp(rng.normal(0.0, sigma_size, n))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        own_iou = np.diag(box_iou(boxes, b)) if n else np.zeros(0)
        detections = {"boxes": boxes, "classes": t["classes"].numpy(), "camera": t["camera"].numpy()}
        ranked.update([{**detections, "scores": own_iou}], [t])
        random.update([{**detections, "scores": rng.uniform(0.5, 1.0, n)}], [t])
    result = ranked.compute()
    return {**{k: round(float(result[k]), 4) for k in ("map", "ap50", "ap75")},
            "map_random": round(float(random.compute()["map"]), 4)}


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--scenes", type=int, default=48, help="held-out scenes (2 frames each) per image size")
    ap.add_argument("--sizes", default="96x192,128x256,256x512", help="input sizes HxW, comma-separated")
    ap.add_argument("--centre", default="0,0.25,0.5,1,2", help="centre noise, px per axis (sigma), comma-separated")
    ap.add_argument("--size-noise", default="0,0.1,0.2", help="log-size noise (sigma), comma-separated")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise and the scores")
    args = ap.parse_args()
    torch.set_num_threads(1)
    min_visible = Detection2DOptions().min_visible  # the task's default: mostly hidden objects are ignored
    centres = [float(v) for v in args.centre.split(",")]
    size_noise = [float(v) for v in args.size_noise.split(",")]
    world = eval_world()
    out: dict = {"benchmark": "detection2d_bound", "scenes": args.scenes, "frames_per_scene": world["frames_per_scene"],
                 "world_seed": world["seed"], "min_visible": min_visible, "noise_seed": args.seed,
                 "sigma_centre_px": centres, "sigma_size": size_noise, "sizes": []}
    for spec in args.sizes.split(","):
        h, w = (int(v) for v in spec.split("x"))
        targets, classes = labels(args.scenes, (h, w))
        heights = np.concatenate([(t["boxes"][:, 3] - t["boxes"][:, 1]).numpy() for t in targets])
        cameras = int(max(int(t["camera"].max()) for t in targets if len(t["camera"])) + 1)
        rng = np.random.default_rng(args.seed)
        grid = {f"{c:g}/{s:g}": noisy_map(targets, classes, cameras, min_visible, c, s, rng)
                for c in centres for s in size_noise}
        out["sizes"].append({"image_size": [h, w], "frames": len(targets), "boxes": int(len(heights)),
                             "box_height_px": {"median": round(float(np.median(heights)), 1),
                                               "under_10px": round(float((heights < 10).mean()), 3)},
                             "noise": grid})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
