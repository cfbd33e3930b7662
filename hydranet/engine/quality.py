"""How good are the auto labels themselves? Score them against the world's ground truth.

The auto labels of a set of frames are treated as predictions (their ``confidence`` as the
score) and fed to each task's own metric against the true labels: nuScenes-style mAP for 3D
objects, light-state accuracy/recall for traffic lights, IoU for drivable, COCO mAP for 2D boxes.
Three columns: the teacher's own outputs as ``hydranet eval`` scores them (``teacher``: every decoded
detection, no cut-off), the single-frame labels (its detections above the confidence cut-off) and the
clip-smoothed labels (tracked, smoothed, gaps filled, light states voted over the clip). The difference
between the last two is what seeing the whole clip buys; the first is the bar a label must clear to
teach a student more than the teacher knows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch.utils.data import Dataset

from hydranet.engine.autolabel import AutoLabelConfig, clip_indices, label_clip, teacher_outputs

_MEASURED = ("objects3d", "traffic_light", "drivable", "detection2d", "bev_semantic")


def autolabel_quality(teacher: Any, pool: Dataset, indices: list[int], cfg: AutoLabelConfig) -> dict[str, Any]:
    """``{"teacher" | "single_frame" | "clip_smoothed": {task: metrics}, "frames": n, "clips": c}``.

    ``pool`` must carry ground truth (open it with labels); ``indices`` are the frames scored."""
    teacher.eval()
    tasks = {n: t for n, t in teacher.task_objects.items() if t.label in _MEASURED}
    metrics = {mode: {n: t.make_metric() for n, t in tasks.items()} for mode in ("teacher", "single_frame",
                                                                                 "clip_smoothed")}
    clips: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        clips.setdefault(tuple(clip_indices(pool, i, cfg.clip_radius)), []).append(i)
    for clip, targets in clips.items():
        truth = {i: pool[i].labels for i in targets}
        samples, decoded = teacher_outputs(teacher, pool, list(clip), cfg.batch_size)
        for i in targets:
            for name, task in tasks.items():
                if truth[i].get(task.label) is not None:
                    metrics["teacher"][name].update([decoded[name][clip.index(i)]], [truth[i][task.label]])
        for mode, smoothing in (("single_frame", False), ("clip_smoothed", True)):
            labels = label_clip(teacher, samples, decoded, replace(cfg, smoothing=smoothing))
            for i in targets:
                f = clip.index(i)
                for name, task in tasks.items():
                    gt = truth[i].get(task.label)
                    if gt is None or task.label not in labels[f]:
                        continue
                    metrics[mode][name].update([labels[f][task.label]], [gt])
    out: dict[str, Any] = {"frames": len(indices), "clips": len(clips)}
    for mode, per_task in metrics.items():
        out[mode] = {name: {k: round(float(v), 4) for k, v in m.compute().items()} for name, m in per_task.items()}
    return out
