"""How much does a network that never looks at the image score? Image-blind "prior" predictors -- the
per-camera, per-pixel statistics of training frames (mean drivable mask, most frequent lane kind, median
depth, mean BEV map), and one state for every traffic light -- scored with each task's own metric on
held-out frames of another world seed. A suite floor at or below these numbers gates nothing; a headline
a prior reaches is flattering (issue 9 sec. 5). Prints one JSON object.

    .venv/bin/python benchmarks/metric_priors.py [--scenes 12] [--height 96 --width 192]
"""

from __future__ import annotations

import argparse
import json

import torch

from hydranet.data.sample import BEV_CLASSES
from hydranet.metrics import DepthMetric, LaneF1, SegmentationIoU, TrafficLightMetric
from hydranet.world import SyntheticWorld, WorldConfig


def frames(seed: int, scenes: int, h: int, w: int) -> list:
    world = SyntheticWorld(WorldConfig(seed=seed, num_scenes=scenes, frames_per_scene=4, setup={"image_size": (h, w)}))
    return [world[i] for i in range(0, len(world), 2)]


def scores(metric, preds, targets) -> dict[str, float]:
    metric.update(preds, targets)
    return {k: round(float(v), 4) for k, v in metric.compute().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=12, help="scenes per world (2 frames used per scene)")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=192)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train = frames(1, args.scenes, args.height, args.width)
    test = frames(9000, args.scenes, args.height, args.width)
    stack = lambda key: torch.stack([s.labels[key] for s in train])  # noqa: E731
    lanes = stack("lanes")
    priors = {
        "drivable": stack("drivable").float().mean(0),
        "lanes": torch.stack([(lanes == k).float().mean(0) for k in range(4)]).argmax(0),
        "depth": stack("depth").median(0).values.clamp(min=0.5),
        "bev_semantic": stack("bev_semantic").float().mean(0),
    }
    metrics = {"drivable": lambda: SegmentationIoU(classes=("drivable",), multilabel=True), "lanes": LaneF1,
               "depth": DepthMetric, "bev_semantic": lambda: SegmentationIoU(classes=BEV_CLASSES, multilabel=True)}
    out: dict = {"frames": {"train": len(train), "test": len(test)}, "image_hw": [args.height, args.width],
                 "prior": {}}
    for task, prior in priors.items():
        out["prior"][task] = scores(metrics[task](), [prior] * len(test), [s.labels[task] for s in test])
    lights = [s.labels.get("traffic_light") for s in test]
    for state, name in enumerate(("red", "yellow", "green")):
        preds = [None if t is None else {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])),
                                         "camera": t["camera"], "state": torch.full_like(t["state"], state)}
                 for t in lights]
        m = scores(TrafficLightMetric(), [p for p in preds if p is not None], [t for t in lights if t is not None])
        out["prior"][f"traffic_light (perfect boxes, all {name})"] = {
            k: m[k] for k in ("balanced_accuracy", "recall/red", "accuracy", "recall")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
