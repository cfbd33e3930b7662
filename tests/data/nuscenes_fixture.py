"""A tiny nuScenes dataroot in the official format (13 tables, samples/, LIDAR_TOP .pcd.bin), written by tests.

One scene (``scene-0061``, in the devkit's ``mini_train`` split) of ``keyframes`` keyframes 0.5 s apart.
The ego drives along world +x at ``SPEED`` m/s, heading ``EGO_YAW``; each camera exposes ``CAM_DT`` s
before the lidar keyframe instant (so camera and lidar ego poses differ, as on a real moving car).
Objects (global frame, constant over time unless moving): a car ahead (moving, has prev/next), an adult
pedestrian, a barrier (no model class: dropped), an animal (not a detection class: dropped) and a car
with no lidar/radar points (filtered). LIDAR_TOP holds one point just inside the car's rear face plus a far ring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

H, W = 48, 80
FX = 40.0
SPEED = 10.0
EGO_YAW = 0.3
CAM_DT = 0.02  # camera exposure this many seconds before the lidar keyframe
T0 = 1_532_402_927_000_000
CAMERAS = {  # channel -> yaw of the optical axis in the ego frame (degrees)
    "CAM_FRONT": 0, "CAM_FRONT_LEFT": 55, "CAM_FRONT_RIGHT": -55, "CAM_BACK_LEFT": 110, "CAM_BACK_RIGHT": -110,
    "CAM_BACK": 180,
}
LIDAR_T = [0.9, 0.0, 1.8]


def ego_pose(t: float) -> tuple[list[float], list[float]]:
    """(translation, rotation wxyz) of the ego at ``t`` s after the first keyframe."""
    d = SPEED * t
    return [100.0 + d * np.cos(EGO_YAW), 200.0 + d * np.sin(EGO_YAW), 0.0], list(Quaternion(axis=[0, 0, 1],
                                                                                             angle=EGO_YAW))


def cam_rotation(yaw_deg: float) -> list[float]:
    """Camera (x right, y down, z forward) to ego, optical axis at ``yaw_deg`` in the ego x-y plane."""
    base = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)  # columns: cam x, y, z in ego
    a = np.radians(yaw_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return list(Quaternion(matrix=rz @ base))


def pose_matrix(translation: list[float], rotation: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Quaternion(rotation).rotation_matrix
    T[:3, 3] = translation
    return T


def world_from_ego_at(t: float) -> np.ndarray:
    return pose_matrix(*ego_pose(t))


def car_position(t: float) -> np.ndarray:
    """The moving car: 12 m ahead of the ego at t=0, driving at 4 m/s along the ego heading."""
    d = 12.0 + 4.0 * t
    return np.array([100.0 + d * np.cos(EGO_YAW), 200.0 + d * np.sin(EGO_YAW), 0.8])


def write_nuscenes(root: Path, keyframes: int = 3, version: str = "v1.0-mini", drop: str | None = None) -> Path:
    """Write the fixture under ``root``; ``drop`` = a relative path to leave out (for error tests)."""
    tables: dict[str, list[dict]] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                                     "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                                     "sample_data", "sample_annotation", "map")}
    tables["visibility"] = [{"token": str(i), "level": lvl, "description": lvl}
                            for i, lvl in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), 1)]
    cats = {"vehicle.car": "cat_car", "human.pedestrian.adult": "cat_ped", "movable_object.barrier": "cat_bar",
            "animal": "cat_animal"}
    tables["category"] = [{"token": tok, "name": name, "description": name} for name, tok in cats.items()]
    tables["log"] = [{"token": "log0", "logfile": "fixture", "vehicle": "n015", "date_captured": "2018-07-24",
                      "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map0", "category": "semantic_prior", "filename": "maps/map0.png",
                      "log_tokens": ["log0"]}]
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.new("L", (1, 1)).save(root / "maps" / "map0.png")
    K = [[FX, 0.0, W / 2], [0.0, FX, H / 2], [0.0, 0.0, 1.0]]
    for ch, yaw in [*CAMERAS.items(), ("LIDAR_TOP", None)]:
        tables["sensor"].append({"token": f"sensor_{ch}", "channel": ch,
                                 "modality": "lidar" if yaw is None else "camera"})
        tables["calibrated_sensor"].append({
            "token": f"cs_{ch}", "sensor_token": f"sensor_{ch}",
            "translation": LIDAR_T if yaw is None else [1.5, 0.0, 1.5],
            "rotation": list(Quaternion(axis=[0, 0, 1], angle=-np.pi / 2)) if yaw is None else cam_rotation(yaw),
            "camera_intrinsic": [] if yaw is None else K})
    samples = [f"sample{k}" for k in range(keyframes)]
    rng = np.random.default_rng(0)
    for k, tok in enumerate(samples):
        t = 0.5 * k
        ts = T0 + round(t * 1e6)
        prev, nxt = samples[k - 1] if k else "", samples[k + 1] if k + 1 < keyframes else ""
        tables["sample"].append({"token": tok, "timestamp": ts, "scene_token": "scene0", "prev": prev, "next": nxt})
        for ch in [*CAMERAS, "LIDAR_TOP"]:
            is_cam = ch != "LIDAR_TOP"
            t_sd = t - CAM_DT if is_cam else t
            ts_sd = T0 + round(t_sd * 1e6)
            sd = f"sd_{ch}_{k}"
            tr, rot = ego_pose(t_sd)
            tables["ego_pose"].append({"token": sd, "timestamp": ts_sd, "translation": tr, "rotation": rot})
            name = f"samples/{ch}/fixture__{ch}__{ts_sd}.{'jpg' if is_cam else 'pcd.bin'}"
            tables["sample_data"].append({
                "token": sd, "sample_token": tok, "ego_pose_token": sd, "calibrated_sensor_token": f"cs_{ch}",
                "timestamp": ts_sd, "fileformat": "jpg" if is_cam else "pcd", "is_key_frame": True,
                "height": H if is_cam else 0, "width": W if is_cam else 0, "filename": name,
                "prev": f"sd_{ch}_{k - 1}" if k else "", "next": f"sd_{ch}_{k + 1}" if k + 1 < keyframes else ""})
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == drop:
                continue
            if is_cam:
                yy, xx = np.mgrid[0:H, 0:W]  # smooth gradients: JPEG keeps them to a few grey levels
                base = rng.integers(0, 128)
                img = np.stack([base + xx, base + yy * 2, np.full_like(xx, 255 - base)], -1).clip(0, 255)
                Image.fromarray(img.astype(np.uint8)).save(path, quality=95)
            else:
                lidar_points(t).astype(np.float32).tofile(path)
    objects = [("car", "vehicle.car", car_position, [1.9, 4.5, 1.6], 40, "4"),
               ("ped", "human.pedestrian.adult", lambda t: np.array([110.0, 197.0, 0.9]), [0.6, 0.7, 1.7], 5, "2"),
               ("bar", "movable_object.barrier", lambda t: np.array([104.0, 206.0, 0.5]), [2.0, 0.5, 1.0], 3, ""),
               ("animal", "animal", lambda t: np.array([108.0, 203.0, 0.3]), [0.3, 0.6, 0.5], 2, ""),
               ("ghost", "vehicle.car", lambda t: np.array([80.0, 200.0, 0.8]), [1.9, 4.5, 1.6], 0, "")]
    for name, cat, where, size, pts, vis in objects:
        anns = [f"ann_{name}_{k}" for k in range(keyframes)]
        tables["instance"].append({"token": f"inst_{name}", "category_token": cats[cat], "nbr_annotations": keyframes,
                                   "first_annotation_token": anns[0], "last_annotation_token": anns[-1]})
        for k, tok in enumerate(anns):
            tables["sample_annotation"].append({
                "token": tok, "sample_token": samples[k], "instance_token": f"inst_{name}", "visibility_token": vis,
                "attribute_tokens": [], "translation": list(where(0.5 * k)), "size": size,
                "rotation": list(Quaternion(axis=[0, 0, 1], angle=EGO_YAW)), "prev": anns[k - 1] if k else "",
                # honest counts: the car holds the one lidar point near it (readers check the sweep against them)
                "next": anns[k + 1] if k + 1 < keyframes else "", "num_lidar_pts": int(name == "car"),
                "num_radar_pts": pts - int(name == "car")})
    tables["scene"] = [{"token": "scene0", "log_token": "log0", "nbr_samples": keyframes, "name": "scene-0061",
                        "description": "fixture", "first_sample_token": samples[0], "last_sample_token": samples[-1]}]
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        if f"{version}/{name}.json" != drop:
            (root / version / f"{name}.json").write_text(json.dumps(rows))
    return root


def lidar_to_world(t: float) -> np.ndarray:
    return world_from_ego_at(t) @ pose_matrix(LIDAR_T, list(Quaternion(axis=[0, 0, 1], angle=-np.pi / 2)))


def lidar_points(t: float) -> np.ndarray:
    """[P, 5] (x, y, z, intensity, ring) in the lidar frame: the car's rear-face centre + a 40 m ring."""
    target = car_position(t) - 2.2 * np.array([np.cos(EGO_YAW), np.sin(EGO_YAW), 0.0])  # 5 cm inside the rear face
    a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ring = np.stack([100 + 40 * np.cos(a), 200 + 40 * np.sin(a), np.full_like(a, 1.0)], 1)
    world = np.vstack([target[None], ring])
    T = np.linalg.inv(lidar_to_world(t))
    local = (T[:3, :3] @ world.T + T[:3, 3:4]).T
    return np.hstack([local, np.zeros((len(local), 2))])
