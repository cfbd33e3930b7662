"""Online 3D object tracking of streamed frames: a track id for every detected box, and velocity read from the
track instead of from one image.

Method: tracking by detection as in CenterPoint (Yin et al., "Center-based 3D Object Detection and Tracking",
CVPR 2021, §3.2): each frame's decoded ``objects3d`` boxes are matched to the tracks' predicted centres greedily,
closest first, one class at a time, within ``gate_m`` metres; a track that misses more than ``max_misses``
frames in a row ends. Each track is a constant-velocity Kalman filter in the world frame of ``T_world_from_ego``
(AB3DMOT, Weng et al., IROS 2020) with state ``(x, y, vx, vy)`` (m, m/s). A matched detection is measured twice:
its centre (standard deviation ``position_std``, m) and the network's velocity head (``velocity_std``, m/s). A
new track therefore starts from the head's velocity, and a track seen for a while leans mostly on its own motion:
with the defaults at 10 Hz a head that is wrong by a constant amount leaves about a tenth of that error in the
track's velocity after a second and about a twentieth from two seconds on. The
motion model's white acceleration noise has standard deviation ``acceleration_std`` (m/s²). Only past frames are
used: this is what a car's runtime can run, unlike the offline smoothing of ``hydranet.engine.track``, which
sees the whole clip.

Why: one image says little about motion. The reference model's velocity head is off by 1.8–2.4 m/s (mAVE) on
the temporal benchmark's held-out clips, while its centres are good to about 0.5 m (mATE). A centre followed over
a second gives the velocity to a fraction of that. The default noise levels were chosen on clips of world seed 1
and checked on seed 1001 (docs/decisions.md, "Velocity from video").

A box's score becomes its track's: the exponential moving average of the scores of the detections the track took
(weight ``score_smoothing`` on the track's past, 0 = each detection's own score). This is Seq-NMS's re-scoring of
video detections along their links (Han et al., "Seq-NMS for Video Object Detection", 2016, which averages over the
whole sequence), made causal: an object found in frame after frame outranks a box seen once, and a score that
wavers around the drawing threshold no longer makes the object blink in and out. The default was chosen on clips of
world seed 3003 and checked on seed 1001 (docs/decisions.md, "Velocity from video").

Boxes and classes pass through unchanged; ``velocity`` becomes the track's filtered velocity (m/s, ego frame axes,
world motion: the same convention as the head and the labels), ``scores`` the track's score, and ``track_id``
(int64) is added.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hydranet.eval.sequence import sequence_starts

TRACKED_TASK = "objects3d"  # the task whose decoded boxes are tracked


def greedy_assignment(pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """Greedy one-to-one association (CenterPoint's): ``pairs`` of ``(cost, track, detection)`` taken in ascending
    cost (ties by track, then detection index), each track and each detection at most once; returns the chosen
    ``(track, detection)`` pairs in that order."""
    used_tracks: set[int] = set()
    used_detections: set[int] = set()
    matches = []
    for _, track, detection in sorted(pairs):
        if track in used_tracks or detection in used_detections:
            continue
        used_tracks.add(track)
        used_detections.add(detection)
        matches.append((track, detection))
    return matches


class TrackerOptions(BaseModel):
    """The tracker's settings (module docstring): the association gate and when a track ends, and the noise levels
    of the Kalman filter (measurement errors of the centre and of the velocity head, the motion's acceleration).
    Raises pydantic's ``ValidationError`` (a ``ValueError``) naming an out-of-range or unknown field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate_m: float = Field(3.0, gt=0, description="largest centre distance (m) between a track's predicted "
                          "centre and the detection it takes")
    max_misses: int = Field(2, ge=0, description="frames in a row a track may go undetected before it ends")
    position_std: float = Field(0.3, gt=0, description="standard deviation (m) of a detected centre's error")
    velocity_std: float = Field(3.0, gt=0, description="standard deviation (m/s) of the velocity head's error")
    acceleration_std: float = Field(0.5, gt=0, description="standard deviation (m/s²) of the white acceleration "
                                    "noise: how fast a track's velocity may change")
    score_smoothing: float = Field(0.8, ge=0, lt=1, description="weight of a track's past in its score, an "
                                   "exponential moving average of its detections' scores (0: each box keeps its own)")


class ObjectTracker:
    """Tracks of one sequence (one camera rig driving through one scene): ``update`` once per frame, in order;
    ``reset`` at a new sequence. Raises ``ValueError`` on a non-finite pose, box, velocity or timestamp, and on a
    timestamp that does not grow (a new sequence needs ``reset``)."""

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self.options = options or TrackerOptions()
        self.reset()

    def reset(self) -> None:
        """Forget every track (the next ``update`` starts new ones)."""
        self.state = np.zeros((0, 4))  # world x, y (m), vx, vy (m/s)
        self.cov = np.zeros((0, 4, 4))
        self.classes = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype=np.int64)
        self.misses = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)  # each track's smoothed detection score
        self.time: float | None = None
        self.next_id = 0

    def _predict(self, dt: float) -> None:
        o = self.options
        F = np.eye(4)
        F[0, 2] = F[1, 3] = dt
        q = o.acceleration_std ** 2
        Q = np.zeros((4, 4))
        for i in (0, 1):  # white-noise acceleration, per axis
            Q[i, i], Q[i + 2, i + 2] = q * dt ** 3 / 3, q * dt
            Q[i, i + 2] = Q[i + 2, i] = q * dt ** 2 / 2
        self.state = self.state @ F.T
        self.cov = F @ self.cov @ F.T + Q

    def _associate(self, centres: np.ndarray, classes: np.ndarray) -> list[tuple[int, int]]:
        """(track, detection) pairs: closest first, same class, within the gate (CenterPoint's greedy matching)."""
        if not len(self.state) or not len(centres):
            return []
        dist = np.linalg.norm(self.state[:, None, :2] - centres[None], axis=-1)
        dist[self.classes[:, None] != classes[None]] = np.inf
        tracks, dets = np.nonzero(dist <= self.options.gate_m)
        return greedy_assignment(list(zip(dist[tracks, dets].tolist(), tracks.tolist(), dets.tolist(), strict=True)))

    def update(self, detections: dict[str, Tensor], T_world_from_ego: Tensor, timestamp: float) -> dict[str, Tensor]:
        """One frame: ``detections`` as ``objects3d`` decodes them (``boxes [M, 7]`` ego x, y, z, l, w, h, yaw in
        m/rad, ``velocity [M, 2]`` m/s, ``classes [M]``, ``scores [M]``), the ego pose ``[4, 4]`` in the world
        frame and the frame's time (s). Returns a copy with ``velocity [M, 2]`` from each box's track (m/s, ego
        frame axes, motion over the ground: the head's convention), ``scores [M]`` the track's smoothed score and
        ``track_id [M]`` int64. Raises
        ``ValueError`` for missing keys, mismatched shapes, non-finite values, or a timestamp that does not grow."""
        missing = [k for k in ("boxes", "velocity", "classes", "scores") if k not in detections]
        if missing:
            raise ValueError(f"tracking: the detections lack {missing} (objects3d's decoded boxes, velocity, classes, "
                             "scores)")
        boxes = detections["boxes"].detach().double().cpu().numpy()
        head_v = detections["velocity"].detach().double().cpu().numpy()
        classes = detections["classes"].detach().cpu().numpy().astype(np.int64)
        scores = detections["scores"].detach().double().cpu().numpy()
        m = len(boxes)
        if boxes.shape != (m, 7) or head_v.shape != (m, 2) or classes.shape != (m,) or scores.shape != (m,):
            raise ValueError(f"tracking: expected boxes [M, 7], velocity [M, 2], classes [M] and scores [M] for one M, "
                             f"got {list(boxes.shape)}, {list(head_v.shape)}, {list(classes.shape)} and "
                             f"{list(scores.shape)}")
        T = T_world_from_ego.detach().double().cpu().numpy()
        if T.shape != (4, 4):
            raise ValueError(f"tracking: T_world_from_ego must be a [4, 4] pose, got shape {list(T.shape)}")
        if not np.isfinite(T).all():
            raise ValueError("tracking: T_world_from_ego holds a non-finite value")
        if not math.isfinite(timestamp):
            raise ValueError(f"tracking: timestamp {timestamp} is not finite")
        if not (np.isfinite(boxes).all() and np.isfinite(head_v).all() and np.isfinite(scores).all()):
            raise ValueError("tracking: non-finite box, velocity or score among the detections")
        if self.time is not None and timestamp <= self.time:
            raise ValueError(f"tracking: timestamp {timestamp} s does not follow {self.time} s; reset() the tracker "
                             "at a new sequence")
        R, t = T[:2, :2], T[:2, 3]  # the yaw-plane part of the pose: world xy = R · ego xy + t
        centres = boxes[:, :2] @ R.T + t
        velocity_world = head_v @ R.T
        if self.time is not None:
            self._predict(timestamp - self.time)
        self.time = timestamp
        o = self.options
        noise = np.diag([o.position_std ** 2] * 2 + [o.velocity_std ** 2] * 2)
        pairs = self._associate(centres, classes)
        matched = np.array([p[0] for p in pairs], dtype=np.int64)
        of_detection = np.full(len(boxes), -1, dtype=np.int64)
        if pairs:
            dets = np.array([p[1] for p in pairs], dtype=np.int64)
            z = np.concatenate([centres[dets], velocity_world[dets]], 1)  # both measured: H is the identity
            P = self.cov[matched]
            gain = np.linalg.solve(P + noise, P).transpose(0, 2, 1)  # P (P + R)^-1, P and R symmetric
            self.state[matched] += np.einsum("nij,nj->ni", gain, z - self.state[matched])
            self.cov[matched] = P - gain @ P
            self.misses[matched] = 0
            a = o.score_smoothing
            self.scores[matched] = a * self.scores[matched] + (1 - a) * scores[dets]
            of_detection[dets] = matched
        unmatched_tracks = np.setdiff1d(np.arange(len(self.state)), matched)
        self.misses[unmatched_tracks] += 1
        new = np.nonzero(of_detection < 0)[0]
        if len(new):
            first = len(self.state)
            self.state = np.concatenate([self.state, np.concatenate([centres[new], velocity_world[new]], 1)])
            self.cov = np.concatenate([self.cov, np.broadcast_to(noise, (len(new), 4, 4))])
            self.classes = np.concatenate([self.classes, classes[new]])
            self.ids = np.concatenate([self.ids, np.arange(self.next_id, self.next_id + len(new))])
            self.misses = np.concatenate([self.misses, np.zeros(len(new), dtype=np.int64)])
            self.scores = np.concatenate([self.scores, scores[new]])
            self.next_id += len(new)
            of_detection[new] = np.arange(first, first + len(new))
        out: dict[str, Any] = dict(detections)
        v_ego = self.state[of_detection, 2:] @ R  # world -> ego axes: v_ego = Rᵀ v_world
        out["velocity"] = torch.as_tensor(v_ego, dtype=detections["velocity"].dtype).reshape(-1, 2)
        out["track_id"] = torch.as_tensor(self.ids[of_detection], dtype=torch.int64)
        out["scores"] = torch.as_tensor(self.scores[of_detection], dtype=detections["scores"].dtype).reshape(-1)
        keep = self.misses <= o.max_misses
        self.state, self.cov, self.classes = self.state[keep], self.cov[keep], self.classes[keep]
        self.ids, self.misses, self.scores = self.ids[keep], self.misses[keep], self.scores[keep]
        return out


class SequenceTrackers:
    """One ``ObjectTracker`` per batch row of a stream (``Streamer``'s rows): a row whose ``scene_id`` changes, or
    whose ``frame_index`` does not grow, starts again from no tracks."""

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self.options = options or TrackerOptions()
        self.trackers: list[ObjectTracker] = []
        self._where: list[tuple[str, int]] = []

    def reset(self) -> None:
        """Forget every row's tracks."""
        self.trackers, self._where = [], []

    def __call__(self, decoded: list[dict[str, Tensor]], scene_id: list[str], frame_index: Tensor,
                 T_world_from_ego: Tensor, timestamp: Tensor) -> list[dict[str, Tensor]]:
        """Each row's ``objects3d`` detections tracked (``ObjectTracker.update``); ``T_world_from_ego [B, 4, 4]``,
        ``timestamp [B]`` s."""
        where = list(zip(scene_id, frame_index.tolist(), strict=True))
        if len(where) != len(self.trackers):
            self.trackers = [ObjectTracker(self.options) for _ in where]
            self._where = []
        if self._where:
            for tracker, starts in zip(self.trackers, sequence_starts(where, self._where), strict=True):
                if starts:
                    tracker.reset()
        self._where = where
        return [tracker.update(d, T_world_from_ego[i], float(timestamp[i]))
                for i, (d, tracker) in enumerate(zip(decoded, self.trackers, strict=True))]
