"""Offline tracking over a whole clip, for auto-labelling (past *and* future frames are known).

3D objects: a teacher's per-frame boxes are moved into the world frame (``T_world_from_ego``),
associated greedily frame to frame by centre distance (same class, constant-velocity prediction,
gate ``gate_m``), the classic tracking-by-detection of CenterPoint (Yin et al. 2021) run offline.
Per track, at every frame between its first and last detection:
- centre: a least-squares line x(t), y(t) through the detections within ±``window`` frames —
  smooths jitter and carries moving objects through occlusion gaps of ≤ ``max_gap`` frames;
- size and height: the median over the track; yaw: the circular mean within the window;
- velocity: the line's slope (m/s, world) rotated into the frame's ego frame;
- class: the score-weighted vote over the track;
- confidence: mean detection score in the window × min(1, hits / ``min_hits``) (short tracks are
  likely false positives), × 0.8 on filled (not detected) frames.

Traffic lights (2D, per camera): associated by IoU with the track's last box; the state at frame f
is the score-weighted vote of the track's detections within ±``window`` frames (a light's state
changes slowly compared with 10 Hz, so a vote removes single-frame flips without hiding changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hydranet.engine.triggers.projection import box_iou
from hydranet.eval import greedy_assignment


def _yaw_of(T: Tensor) -> float:
    """Yaw (radians, about +z) of the rotation in the homogeneous transform ``T`` [4, 4]."""
    return math.atan2(float(T[1, 0]), float(T[0, 0]))


def boxes_to_world(boxes: Tensor, T_world_from_ego: Tensor) -> Tensor:
    """Ego boxes ``[M, 7]`` (x, y, z, l, w, h, yaw) → world frame."""
    if len(boxes) == 0:
        return boxes.double()
    T = T_world_from_ego.double()
    b = boxes.double().clone()
    b[:, :3] = b[:, :3] @ T[:3, :3].T + T[:3, 3]
    b[:, 6] = b[:, 6] + _yaw_of(T)
    return b


def boxes_to_ego(boxes: Tensor, T_world_from_ego: Tensor) -> Tensor:
    """World boxes ``[M, 7]`` → the ego frame of ``T_world_from_ego``."""
    if len(boxes) == 0:
        return boxes.float()
    T = T_world_from_ego.double()
    b = boxes.double().clone()
    b[:, :3] = (b[:, :3] - T[:3, 3]) @ T[:3, :3]
    b[:, 6] = torch.atan2(torch.sin(b[:, 6] - _yaw_of(T)), torch.cos(b[:, 6] - _yaw_of(T)))
    return b.float()


@dataclass
class Track:
    """A teacher track over the frames of a clip: per observation the frame index, the box (world-frame
    [7] x, y, z (m), l, w, h (m), yaw (rad) for 3D objects; image xyxy [4] pixels for lights), score,
    class or light state, governed lane (lights) and the camera (lights)."""

    frames: list[int] = field(default_factory=list)
    boxes: list[Tensor] = field(default_factory=list)  # world [7] (3D) or image xyxy [4] (lights)
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # class (3D) or state (lights)
    extra: list[int] = field(default_factory=list)  # lights: governed lane
    camera: int = -1

    def vote(self, around: int | None = None, window: int = 10**9) -> int:
        """The score-weighted majority label over observations within ``window`` frames of ``around``
        (all frames when ``around`` is None); the first label when none is in the window."""
        weights: dict[int, float] = {}
        for f, s, lab in zip(self.frames, self.scores, self.labels, strict=True):
            if around is None or abs(f - around) <= window:
                weights[lab] = weights.get(lab, 0.0) + s
        return max(weights, key=weights.get) if weights else self.labels[0]  # type: ignore[arg-type]


def track_objects(per_frame: list[tuple[Tensor, Tensor, Tensor]], gate_m: float = 2.5, max_gap: int = 3) -> list[Track]:
    """``per_frame[f] = (world boxes [M, 7], classes [M], scores [M])`` → tracks."""
    tracks: list[Track] = []
    active: list[Track] = []
    for f, (boxes, classes, scores) in enumerate(per_frame):
        active = [t for t in active if f - t.frames[-1] <= max_gap + 1]
        pairs = []
        for ti, t in enumerate(active):
            pred = t.boxes[-1][:2].clone()
            if len(t.frames) > 1:  # constant velocity from the last two detections
                v = (t.boxes[-1][:2] - t.boxes[-2][:2]) / (t.frames[-1] - t.frames[-2])
                pred = pred + v * (f - t.frames[-1])
            for j in range(len(boxes)):
                if int(classes[j]) == t.vote():
                    d = float((boxes[j, :2] - pred).norm())
                    if d <= gate_m:
                        pairs.append((d, ti, j))
        matches = greedy_assignment(pairs)
        for ti, j in matches:
            t = active[ti]
            t.frames.append(f)
            t.boxes.append(boxes[j])
            t.scores.append(float(scores[j]))
            t.labels.append(int(classes[j]))
        used = {j for _, j in matches}
        for j in range(len(boxes)):
            if j not in used:
                t = Track([f], [boxes[j]], [float(scores[j])], [int(classes[j])])
                tracks.append(t)
                active.append(t)
    return tracks


def _line(frames: list[int], values: list[float], at: float) -> tuple[float, float]:
    """Least-squares line through (frame, value) evaluated at ``at``; returns (value, slope)."""
    n = len(frames)
    if n == 1:
        return values[0], 0.0
    mx, my = sum(frames) / n, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in frames)
    slope = sum((x - mx) * (y - my) for x, y in zip(frames, values, strict=True)) / sxx if sxx else 0.0
    return my + slope * (at - mx), slope


def smooth_track(t: Track, window: int = 3, max_gap: int = 3, min_hits: int = 3,
                 velocity_window: int | None = None) -> dict[int, tuple[Tensor, Tensor, float, bool]]:
    """Per frame from first to last detection: (world box [7], world velocity [2] m/frame,
    confidence, filled). Frames in a gap longer than ``max_gap`` are left out.

    Position is a least-squares line through the detections within ``window`` frames; velocity is the
    slope of one through those within ``velocity_window`` frames (default: ``window``). A slope's error
    falls with the window's length to the power 1.5, so a wider velocity window reads motion from
    localisation noise a position fit of the same width would blur."""
    vwin = window if velocity_window is None else velocity_window
    out = {}
    stack = torch.stack(t.boxes)
    size = stack[:, 3:6].median(0).values
    z = float(stack[:, 2].median())
    hits_factor = min(1.0, len(t.frames) / min_hits)
    for f in range(t.frames[0], t.frames[-1] + 1):
        nearest = min(abs(f - g) for g in t.frames)
        if nearest > max_gap:
            continue
        near = [k for k, g in enumerate(t.frames) if abs(g - f) <= max(window, nearest)]
        fr = [t.frames[k] for k in near]
        x, _ = _line(fr, [float(t.boxes[k][0]) for k in near], f)
        y, _ = _line(fr, [float(t.boxes[k][1]) for k in near], f)
        vnear = [k for k, g in enumerate(t.frames) if abs(g - f) <= max(vwin, nearest)]
        vfr = [t.frames[k] for k in vnear]
        _, vx = _line(vfr, [float(t.boxes[k][0]) for k in vnear], f)
        _, vy = _line(vfr, [float(t.boxes[k][1]) for k in vnear], f)
        yaw = math.atan2(sum(math.sin(float(t.boxes[k][6])) for k in near),
                         sum(math.cos(float(t.boxes[k][6])) for k in near))
        filled = f not in t.frames
        conf = sum(t.scores[k] for k in near) / len(near) * hits_factor * (0.8 if filled else 1.0)
        box = torch.tensor([x, y, z, float(size[0]), float(size[1]), float(size[2]), yaw], dtype=torch.float64)
        out[f] = (box, torch.tensor([vx, vy], dtype=torch.float64), conf, filled)
    return out


def track_lights(per_frame: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]], min_iou: float = 0.1,
                 max_gap: int = 2) -> list[Track]:
    """``per_frame[f] = (boxes [L, 4], camera [L], state [L], scores [L], lane [L])`` → light tracks."""
    tracks: list[Track] = []
    active: list[Track] = []
    for f, (boxes, cams, states, scores, lanes) in enumerate(per_frame):
        active = [t for t in active if f - t.frames[-1] <= max_gap + 1]
        pairs = []
        if len(active) and len(boxes):
            last = torch.stack([t.boxes[-1] for t in active]).float()
            iou = box_iou(last, boxes.float())
            same = torch.tensor([t.camera for t in active])[:, None] == cams[None, :]
            iou = iou * same
            pairs = [(-float(iou[a, b]), a, b) for a in range(len(active)) for b in range(len(boxes))
                     if float(iou[a, b]) >= min_iou]
        matches = greedy_assignment(pairs)
        for a, b in matches:
            t = active[a]
            t.frames.append(f)
            t.boxes.append(boxes[b].float())
            t.scores.append(float(scores[b]))
            t.labels.append(int(states[b]))
            t.extra.append(int(lanes[b]))
        used = {b for _, b in matches}
        for b in range(len(boxes)):
            if b not in used:
                t = Track([f], [boxes[b].float()], [float(scores[b])], [int(states[b])], [int(lanes[b])],
                          int(cams[b]))
                tracks.append(t)
                active.append(t)
    return tracks
