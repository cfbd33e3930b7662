"""The nuScenes reader's label geometry, as pure functions of arrays (no devkit tables): poses from
nuScenes' translation + quaternion records, 2D boxes projected from ego-frame 3D boxes, sparse depth
from lidar points, BEV occupancy from boxes, and the future ego path from LIDAR_TOP ego poses.

Frames: "ego" is the sample's ego frame (ego pose at the LIDAR_TOP keyframe instant, x forward, y left,
z up, metres); cameras are OpenCV (x right, y down, z forward). ``nuscenes.py`` documents the labels.
Follows nuscenes-devkit: ``view_points`` for projection, ``export_2d_annotations`` (corners in front of
the camera, hull clipped to the image), ``map_pointcloud_to_image`` (``min_dist``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hydranet.data.labels import BEV_CLASSES
from hydranet.geometry import BevGrid, box_corners

# Model class (world or nuScenes vocabulary) -> BEV channel rasterised from boxes.
_BEV_FROM_CLASS: dict[str, str] = {
    "car": "vehicle", "truck": "vehicle", "bus": "vehicle", "trailer": "vehicle", "construction_vehicle": "vehicle",
    "motorcycle": "vehicle", "bicycle": "vehicle", "pedestrian": "pedestrian", "cone": "cone", "traffic_cone": "cone"}


def pose_matrix(translation: Any, rotation: Any) -> np.ndarray:
    """float64 ``[4, 4]`` rigid transform from a nuScenes record: ``translation`` (x, y, z metres) and
    ``rotation`` (unit quaternion w, x, y, z, as ``pyquaternion.Quaternion`` takes it)."""
    from pyquaternion import Quaternion  # a nuscenes-devkit dependency: optional, loaded with the source

    T = np.eye(4)
    T[:3, :3] = Quaternion(rotation).rotation_matrix
    T[:3, 3] = translation
    return T


def level(T_world_from_body: np.ndarray) -> np.ndarray:
    """The levelled pose of a car body pose ``[4, 4]``: same position, rotation about world z by the body's
    yaw only (roll and pitch dropped), so the frame's z axis is the world's up."""
    R = T_world_from_body[:3, :3]
    yaw = np.arctan2(R[1, 0], R[0, 0])
    out = np.eye(4)
    out[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    out[:3, 3] = T_world_from_body[:3, 3]
    return out


def track_id(instance_token: str) -> int:
    """A stable non-negative int64 for an instance token (first 7 bytes of its MD5, little-endian)."""
    return int.from_bytes(hashlib.md5(instance_token.encode()).digest()[:7], "little")


def project_boxes2d(boxes: dict[str, torch.Tensor], K: np.ndarray, T_ego_from_cam: np.ndarray,
                    hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The ``detection2d`` label: every ego-frame box projected into every camera.

    ``boxes``: ``boxes`` float32 ``[M, 7]`` (x, y, z, l, w, h, yaw; ego, metres/radians), ``classes``,
    ``visible``, ``track_id`` ``[M]``. ``K`` ``[N, 3, 3]`` and ``T_ego_from_cam`` ``[N, 4, 4]`` float64;
    ``hw`` = (H, W) image pixels. Corners less than 0.1 m in front of a camera are dropped, the hull of
    the rest is clipped to the image, and boxes under 1 px wide or high are left out. Returns ``boxes``
    float32 ``[B, 4]`` (x1, y1, x2, y2 pixels), ``classes``/``camera``/``track_id`` int64 ``[B]``,
    ``visible`` float32 ``[B]``, camera-major.
    """
    from nuscenes.utils.geometry_utils import view_points

    h, w = hw
    corners = box_corners(boxes["boxes"].double()).numpy()  # [M, 8, 3] ego
    out: dict[str, list] = {"boxes": [], "classes": [], "camera": [], "visible": [], "track_id": []}
    for n in range(len(K)):
        T_cam_from_ego = np.linalg.inv(T_ego_from_cam[n])
        for m in range(len(corners)):
            pts = T_cam_from_ego[:3, :3] @ corners[m].T + T_cam_from_ego[:3, 3:4]  # [3, 8]
            pts = pts[:, pts[2] > 0.1]  # corners in front of the camera (devkit export_2d_annotations)
            if pts.shape[1] == 0:
                continue
            uv = view_points(pts, K[n], normalize=True)[:2]
            x1, y1 = uv.min(1)
            x2, y2 = uv.max(1)
            x1, x2 = np.clip([x1, x2], 0, w)
            y1, y2 = np.clip([y1, y2], 0, h)
            if x2 - x1 < 1.0 or y2 - y1 < 1.0:
                continue
            out["boxes"].append([x1, y1, x2, y2])
            out["classes"].append(int(boxes["classes"][m]))
            out["camera"].append(n)
            out["visible"].append(float(boxes["visible"][m]))
            out["track_id"].append(int(boxes["track_id"][m]))
    return {"boxes": torch.tensor(out["boxes"], dtype=torch.float32).reshape(-1, 4),
            "classes": torch.tensor(out["classes"], dtype=torch.int64),
            "camera": torch.tensor(out["camera"], dtype=torch.int64),
            "visible": torch.tensor(out["visible"], dtype=torch.float32),
            "track_id": torch.tensor(out["track_id"], dtype=torch.int64)}


def lidar_depth(points_ego: np.ndarray, K: np.ndarray, T_ego_from_cam: np.ndarray, hw: tuple[int, int],
                min_depth: float) -> torch.Tensor:
    """Sparse ``depth`` label: float32 ``[N, H, W]`` z-depth in metres, 0 where no point lands.

    ``points_ego``: float64 ``[3, P]`` lidar points in the ego frame; ``K`` ``[N, 3, 3]``,
    ``T_ego_from_cam`` ``[N, 4, 4]``; ``hw`` = (H, W). Points closer than ``min_depth`` metres to a camera
    are dropped (the devkit's ``map_pointcloud_to_image`` ``min_dist``); where several points fall in one
    pixel the nearest wins (z-buffer).
    """
    from nuscenes.utils.geometry_utils import view_points

    h, w = hw
    depth = np.zeros((len(K), h, w), dtype=np.float32)
    for n in range(len(K)):
        T = np.linalg.inv(T_ego_from_cam[n])
        cam = T[:3, :3] @ points_ego + T[:3, 3:4]
        keep = cam[2] > min_depth
        cam = cam[:, keep]
        uv = view_points(cam, K[n], normalize=True)[:2]
        u, v = np.floor(uv[0]).astype(np.int64), np.floor(uv[1]).astype(np.int64)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        u, v, z = u[inside], v[inside], cam[2, inside].astype(np.float32)
        order = np.argsort(-z)  # far first: the nearest point of a pixel is written last and wins
        depth[n, v[order], u[order]] = z[order]
    return torch.from_numpy(depth)


def rasterise_bev(boxes: dict[str, torch.Tensor], grid: BevGrid,
                  model_classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``bev_semantic`` uint8 ``[len(BEV_CLASSES), rows, cols]`` occupancy and ``bev_semantic_known``
    uint8 ``[len(BEV_CLASSES)]`` (1 for the channels boxes can fill: ``_BEV_FROM_CLASS``).

    ``boxes``: ``boxes`` ``[M, 7]`` ego-frame (x, y, z, l, w, h, yaw) and ``classes`` ``[M]`` indices into
    ``model_classes``. A cell is set when its centre lies inside a box footprint; the cell holding a
    box's centre is always set, so a box smaller than a cell is not lost.
    """
    g = grid
    out = torch.zeros(len(BEV_CLASSES), g.rows, g.cols, dtype=torch.uint8)
    centres = g.cell_centres(torch.float64)
    xe, ye = centres[..., 0], centres[..., 1]
    for box, c in zip(boxes["boxes"].double().tolist(), boxes["classes"].tolist(), strict=True):
        channel = _BEV_FROM_CLASS.get(model_classes[c])
        if channel is None:
            continue
        bx, by, _, bl, bw, _, yaw = box
        cb, sb = np.cos(yaw), np.sin(yaw)
        dx, dy = xe - bx, ye - by
        # Cells whose centre is inside the footprint, and at least the cell holding the centre.
        inside = ((cb * dx + sb * dy).abs() <= bl / 2) & ((-sb * dx + cb * dy).abs() <= bw / 2)
        k = BEV_CLASSES.index(channel)
        out[k] |= inside.to(torch.uint8)
        r, col, ok = g.cell_indices(torch.tensor([bx]), torch.tensor([by]))
        if bool(ok[0]):
            out[k, int(r[0]), int(col[0])] = 1
    known = torch.tensor([name in _BEV_FROM_CLASS.values() for name in BEV_CLASSES], dtype=torch.uint8)
    return out, known


def future_ego_path(times: np.ndarray, poses: np.ndarray, T_world_from_ego: np.ndarray, t0: float,
                    seconds: float, rate_hz: float) -> torch.Tensor | None:
    """``ego_path`` label: float32 ``[S, 3]`` future (x, y, yaw) in the current ego frame (metres, radians
    in [-pi, pi)), S = ``round(seconds * rate_hz)`` (at least 1) steps at ``rate_hz`` after ``t0``.

    ``times``: float64 ``[T]`` µs, ascending, and ``poses`` ``[T, 4, 4]`` world-from-ego of the scene's
    LIDAR_TOP sample_data (sweeps too); ``T_world_from_ego`` is the pose at ``t0`` (µs). Positions and the
    unwrapped yaw are interpolated linearly. None when the log ends before the horizon.
    """
    steps = max(1, round(seconds * rate_hz))
    want = t0 + np.arange(1, steps + 1) / rate_hz * 1e6
    if len(times) < 2 or want[-1] > times[-1]:
        return None  # the log ends before the horizon: no ego_path label
    T_ego_from_world = np.linalg.inv(T_world_from_ego)
    rel = T_ego_from_world[None] @ poses  # [T, 4, 4] future poses in the current ego frame
    x = np.interp(want, times, rel[:, 0, 3])
    y = np.interp(want, times, rel[:, 1, 3])
    yaw = np.unwrap(np.arctan2(rel[:, 1, 0], rel[:, 0, 0]))
    yaw = np.interp(want, times, yaw)
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    return torch.tensor(np.stack([x, y, yaw], -1), dtype=torch.float32)
