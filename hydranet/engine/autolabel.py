"""``auto``: offline auto-labelling with a teacher HydraNet that sees the whole clip.

For each queued frame the teacher runs on every frame of its clip (the sequence it belongs to,
up to ``clip_radius`` frames before and after — the future is known offline). Then:
- ``objects3d``: boxes tracked through the clip in the world frame, smoothed, occlusion gaps
  filled, classes voted (``track.py``); the frame's label is every track alive at that frame;
- ``traffic_light``: lights tracked per camera, states voted over ±``window`` frames, a light
  missing for ≤ ``max_gap`` frames between two detections is filled with the interpolated box;
- every other teacher task (drivable, lanes, depth, BEV semantic, 2D detection): the teacher's
  own decoded output on that frame (thresholded detections) — no clip smoothing for those.

Each label carries ``confidence`` (a float32 field per box/light in ragged labels; for dense maps
the mean |2p − 1| in ``labels.jsonl``), and ``labels.jsonl`` records the provenance (teacher
checkpoint and trunk hash, clip range, smoothing on/off). ``min_confidence`` filters boxes and
lights below it before they are written; frames whose mean confidence is below
``min_frame_confidence`` are left out (counted) — that is how training filters by confidence.

``smoothing=False`` gives the single-frame teacher labels, the baseline that ``autolabel_quality``
compares against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hydranet.checkpoint import trunk_hash
from hydranet.data import Sample, collate, label_spec
from hydranet.engine.label import LabelError, Labelled, check_queue_fits, label_cost
from hydranet.engine.track import boxes_to_ego, boxes_to_world, smooth_track, track_lights, track_objects
from hydranet.eval import Evaluator


@dataclass
class AutoLabelConfig:
    """Auto-labeller settings: score/confidence cut-offs in [0, 1], the clip and smoothing windows in
    frames, the 3D association gate in metres (ego/world frame), and the teacher's batch size."""

    min_score: float = 0.3  # teacher detections kept as track evidence / single-frame labels
    min_confidence: float = 0.3  # boxes/lights below this are not written
    min_frame_confidence: float = 0.0  # frames whose mean confidence is below this are dropped
    clip_radius: int = 20  # frames before and after the target frame the teacher sees
    window: int = 3  # smoothing / voting half-window in frames
    velocity_window: int = 10  # half-window of the line whose slope is a track's velocity, frames
    max_gap: int = 3  # longest occlusion gap filled, frames
    min_hits: int = 3  # tracks shorter than this get proportionally lower confidence
    gate_m: float = 2.5  # 3D association gate, metres
    smoothing: bool = True
    batch_size: int = 4


def clip_indices(pool: Dataset, index: int, radius: int) -> list[int]:
    """Pool indices of ``index``'s sequence within ±``radius`` frames, in time order.

    The synthetic world knows its scene layout; any other source is walked outward from
    ``index`` while ``scene_id`` stays the same and ``frame_index`` steps by one."""
    cfg = getattr(pool, "config", None)
    if cfg is not None and hasattr(cfg, "frames_per_scene"):
        per = cfg.frames_per_scene
        first = index - index % per
        return list(range(max(first, index - radius), min(first + per, index + radius + 1)))
    here = pool[index]
    out = [index]
    for step in (-1, 1):
        j, prev = index + step, here.frame_index
        while 0 <= j < len(pool) and abs(j - index) <= radius:  # type: ignore[arg-type]
            s = pool[j]
            if s.scene_id != here.scene_id or s.frame_index != prev + step:
                break
            out.append(j)
            prev, j = s.frame_index, j + step
    return sorted(out)


@torch.no_grad()
def teacher_outputs(teacher: Any, pool: Dataset, indices: list[int], batch_size: int) -> tuple[list[Sample],
                                                                                                 dict[str, list]]:
    """Samples (labels stripped) and decoded teacher outputs per task for ``indices``."""
    samples, decoded = [], {name: [] for name in teacher.task_objects}
    predictor = Evaluator(teacher, score=False)
    for s in range(0, len(indices), batch_size):
        chunk = [pool[i] for i in indices[s:s + batch_size]]
        for c in chunk:
            c.labels = {}
        prediction = predictor.step(collate(chunk))
        for name, task in teacher.task_objects.items():
            decoded[name] += prediction.decoded(name)
            if name in ("drivable", "bev_semantic") and hasattr(task, "probabilities"):
                decoded.setdefault(f"{name}/prob", []).extend(prediction.probabilities(name))
        samples += chunk
    return samples, decoded


def _keep(d: dict[str, Tensor], thr: float) -> dict[str, Tensor]:
    k = d["scores"] >= thr
    return {key: v[k] for key, v in d.items()}


def label_clip(teacher: Any, samples: list[Sample], decoded: dict[str, list], cfg: AutoLabelConfig) -> list[dict]:
    """Auto labels for every frame of a clip: ``[{label name: value}]`` (ragged ones carry
    ``confidence`` and, for metrics, ``scores`` = confidence)."""
    n = len(samples)
    labels: list[dict[str, Any]] = [{} for _ in range(n)]
    tasks = teacher.task_objects
    for name, task in tasks.items():
        if task.label in ("objects3d", "traffic_light"):
            continue
        for f in range(n):
            d = decoded[name][f]
            if isinstance(d, dict):  # detection2d: thresholded, fields the label format needs
                d = _keep(d, cfg.min_score)
                m = len(d["boxes"])
                labels[f][task.label] = {"boxes": d["boxes"].float(), "classes": d["classes"].long(),
                                         "camera": d["camera"].long(), "visible": torch.ones(m),
                                         "track_id": torch.full((m,), -1, dtype=torch.long),
                                         "confidence": d["scores"].float(), "scores": d["scores"].float()}
            elif label_spec(task.label).kind == "dense":
                labels[f][task.label] = d
    if "objects3d" in tasks:
        _objects(samples, decoded["objects3d"], labels, cfg)
    if "traffic_light" in tasks:
        _lights(decoded["traffic_light"], labels, cfg)
    return labels


def _objects(samples: list[Sample], dets: list[dict], labels: list[dict], cfg: AutoLabelConfig) -> None:
    n = len(samples)
    Ts = [s.T_world_from_ego.double() for s in samples]
    if not cfg.smoothing:
        for f in range(n):
            d = _keep(dets[f], cfg.min_confidence)
            m = len(d["boxes"])
            labels[f]["objects3d"] = {"boxes": d["boxes"].float(), "velocity": d["velocity"].float(),
                                      "classes": d["classes"].long(), "track_id": torch.full((m,), -1).long(),
                                      "confidence": d["scores"].float(), "scores": d["scores"].float()}
        return
    per_frame = []
    for f in range(n):
        d = _keep(dets[f], cfg.min_score)
        per_frame.append((boxes_to_world(d["boxes"], Ts[f]), d["classes"], d["scores"]))
    tracks = track_objects(per_frame, cfg.gate_m, cfg.max_gap)
    dt = [(samples[min(f + 1, n - 1)].timestamp - samples[max(f - 1, 0)].timestamp) / max(min(f + 1, n - 1)
          - max(f - 1, 0), 1) for f in range(n)]
    rows: list[list[tuple]] = [[] for _ in range(n)]
    for tid, t in enumerate(tracks):
        cls = t.vote()
        smoothed = smooth_track(t, cfg.window, cfg.max_gap, cfg.min_hits, cfg.velocity_window)
        for f, (box, vel, conf, _filled) in smoothed.items():
            if conf >= cfg.min_confidence:
                rows[f].append((box, vel / max(dt[f], 1e-6), conf, cls, tid))
    for f in range(n):
        if not rows[f]:
            labels[f]["objects3d"] = {"boxes": torch.zeros(0, 7), "velocity": torch.zeros(0, 2),
                                      "classes": torch.zeros(0, dtype=torch.long),
                                      "track_id": torch.zeros(0, dtype=torch.long), "confidence": torch.zeros(0),
                                      "scores": torch.zeros(0)}
            continue
        boxes = boxes_to_ego(torch.stack([r[0] for r in rows[f]]), Ts[f])
        R = Ts[f][:2, :2]
        vel = (torch.stack([r[1] for r in rows[f]]) @ R).float()  # world → ego: v_ego = Rᵀ v_world
        conf = torch.tensor([r[2] for r in rows[f]], dtype=torch.float32)
        labels[f]["objects3d"] = {"boxes": boxes, "velocity": vel,
                                  "classes": torch.tensor([r[3] for r in rows[f]], dtype=torch.long),
                                  "track_id": torch.tensor([r[4] for r in rows[f]], dtype=torch.long),
                                  "confidence": conf, "scores": conf.clone()}


def _lights(dets: list[dict], labels: list[dict], cfg: AutoLabelConfig) -> None:
    n = len(dets)
    if not cfg.smoothing:
        for f in range(n):
            d = _keep(dets[f], cfg.min_confidence)
            m = len(d["boxes"])
            labels[f]["traffic_light"] = {"boxes": d["boxes"].float(), "camera": d["camera"].long(),
                                          "state": d["state"].long(), "lane": d["lane"].long(),
                                          "track_id": torch.full((m,), -1).long(), "confidence": d["scores"].float(),
                                          "scores": d["scores"].float()}
        return
    per_frame = []
    for f in range(n):
        d = _keep(dets[f], cfg.min_score)
        per_frame.append((d["boxes"], d["camera"], d["state"], d["scores"], d["lane"]))
    tracks = track_lights(per_frame, max_gap=cfg.max_gap)
    rows: list[list[tuple]] = [[] for _ in range(n)]
    for tid, t in enumerate(tracks):
        hits = min(1.0, len(t.frames) / cfg.min_hits)
        for f in range(t.frames[0], t.frames[-1] + 1):
            if f in t.frames:
                k = t.frames.index(f)
                box, score, lane = t.boxes[k], t.scores[k], t.extra[k]
            else:  # occlusion gap: interpolate between the detections around it
                before = max(k for k, g in enumerate(t.frames) if g < f)
                after = before + 1
                g0, g1 = t.frames[before], t.frames[after]
                if g1 - g0 - 1 > cfg.max_gap:
                    continue
                a = (f - g0) / (g1 - g0)
                box = (1 - a) * t.boxes[before] + a * t.boxes[after]
                score, lane = 0.8 * min(t.scores[before], t.scores[after]), t.extra[before]
            conf = score * hits
            if conf >= cfg.min_confidence:
                rows[f].append((box, t.camera, t.vote(f, cfg.window), lane, tid, conf))
    for f in range(n):
        r = rows[f]
        conf = torch.tensor([x[5] for x in r], dtype=torch.float32)
        labels[f]["traffic_light"] = {
            "boxes": torch.stack([x[0] for x in r]).float() if r else torch.zeros(0, 4),
            "camera": torch.tensor([x[1] for x in r], dtype=torch.long),
            "state": torch.tensor([x[2] for x in r], dtype=torch.long),
            "lane": torch.tensor([x[3] for x in r], dtype=torch.long),
            "track_id": torch.tensor([x[4] for x in r], dtype=torch.long), "confidence": conf, "scores": conf.clone()}


def _frame_confidence(labels: dict[str, Any], decoded_probs: dict[str, Tensor]) -> dict[str, float]:
    """Per label: mean box/light confidence (1.0 with none), dense maps: mean |2p − 1|."""
    out = {}
    for name, v in labels.items():
        if isinstance(v, dict):
            c = v.get("confidence")
            out[name] = float(c.mean()) if c is not None and len(c) else 1.0
    for name, p in decoded_probs.items():
        out[name] = float((2 * p - 1).abs().mean())
    return out


def autolabel_items(queue: list[dict[str, Any]], pool: Dataset, teacher: Any, teacher_path: str,
                    cfg: AutoLabelConfig, skipped: list[str] | None = None) -> Iterator[Labelled]:
    """Auto-labelled samples for the queued frames (each clip is run once for all its frames)."""

    check_queue_fits(queue, pool)
    thash = trunk_hash(teacher)
    teacher.eval()
    clips: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for row in queue:
        clips.setdefault(tuple(clip_indices(pool, row["index"], cfg.clip_radius)), []).append(row)
    for clip, rows in clips.items():
        samples, decoded = teacher_outputs(teacher, pool, list(clip), cfg.batch_size)
        labels = label_clip(teacher, samples, decoded, cfg)
        for row in rows:
            f = clip.index(row["index"])
            s = samples[f]
            if f"{s.scene_id}#{s.frame_index}" != row["frame_id"]:
                raise LabelError(f"queue rank {row.get('rank')}: pool index {row['index']} is "
                                 f"{s.scene_id}#{s.frame_index}, the queue says {row['frame_id']}")
            lab = {k: ({kk: vv for kk, vv in v.items() if kk != "scores"} if isinstance(v, dict) else v)
                   for k, v in labels[f].items()}
            probs = {k.split("/")[0]: v[f] for k, v in decoded.items() if k.endswith("/prob")}
            conf = _frame_confidence(lab, probs)
            mean_conf = sum(conf.values()) / max(len(conf), 1)
            if mean_conf < cfg.min_frame_confidence:
                if skipped is not None:
                    skipped.append(row["frame_id"])
                continue
            s.labels = lab
            record = {"rank": row.get("rank"), "index": row["index"], "frame_id": row["frame_id"],
                      "cost": {**label_cost(lab), "total": 0},  # machine labels: nothing bought
                      "provenance": {"labeller": "auto", "teacher": teacher_path, "trunk_hash": thash,
                                     "clip": [_pool_frame(samples[0]), _pool_frame(samples[-1])],
                                     "clip_frames": len(clip), "smoothing": cfg.smoothing},
                      "confidence": conf}
            yield Labelled(s, record)


def _pool_frame(s: Sample) -> str:
    """The pool frame id ``"<scene_id>#<frame_index>"`` of ``s`` (the key used in queues and records)."""
    return f"{s.scene_id}#{s.frame_index}"
