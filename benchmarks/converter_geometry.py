"""Do the converters agree with the datasets' own geometry? Box corners through the converted K and
``T_ego_from_cam`` against the dataset's own projection, on the real sample frames of ``../shared/realdata``.

- ``kitti``: training frame 000008 (``derived/kitti_object_000008``). The dataset's projection: each label's
  8 corners in the rectified camera-0 frame (bottom-centre ``location``, ``h, w, l``, ``rotation_y`` about the
  rectified y axis, the devkit's ``computeBox3D``) through ``P2``. Ours: the converted ego-frame box's corners
  (``hydranet.geometry.box_corners``) through ``inv(T_ego_from_cam)`` and ``K``, the sample the ``kitti``
  source produces (native 1242x375).
- ``nuscenes``: the v1.0-mini keyframe (``derived/nuscenes_v1.0-mini_scene-0061_sample0``). The dataset's
  projection: nuscenes-devkit's ``get_sample_data`` (boxes moved into each camera) and ``view_points``. Ours:
  the ``nuscenes`` source's ego boxes (every annotation: no class or point filter) into every camera.

Per box, each dataset corner in front of the camera (z > 0.1 m) is paired with the nearest converted corner
(in 3D camera coordinates; the corner orders differ) and the pixel distance of their projections is taken.
Prints one JSON object: per dataset the max and mean corner error (px), the boxes and corners compared, and
the worst box. ``--root`` points at another realdata folder; a dataset whose files are absent is reported as
``{"skipped": ...}``.

    .venv/bin/python benchmarks/converter_geometry.py
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
KITTI = Path("derived") / "kitti_object_000008" / "training"
NUSCENES = Path("derived") / "nuscenes_v1.0-mini_scene-0061_sample0"


def kitti_corners_rect(h: float, w: float, length: float, location: list[float], ry: float) -> np.ndarray:
    """``[3, 8]`` corners in the rectified camera-0 frame of a KITTI label (the devkit's ``computeBox3D``)."""
    x = [length / 2, length / 2, -length / 2, -length / 2, length / 2, length / 2, -length / 2, -length / 2]
    y = [0, 0, 0, 0, -h, -h, -h, -h]
    z = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    R = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    return R @ np.array([x, y, z], dtype=np.float64) + np.asarray(location, dtype=np.float64)[:, None]


def project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[2, P]`` pixels of camera-frame ``points`` ``[3, P]`` through a 3x3 ``K`` (or a 3x4 ``P``)."""
    p = K @ (points if K.shape[1] == 3 else np.vstack([points, np.ones((1, points.shape[1]))]))
    return p[:2] / p[2:]


def corner_errors(ref_cam: np.ndarray, ref_px: np.ndarray, ours_cam: np.ndarray, ours_px: np.ndarray) -> list[float]:
    """Pixel distance of each reference corner in front of the camera to its nearest converted corner."""
    out = []
    for i in np.nonzero(ref_cam[2] > 0.1)[0]:
        j = int(np.argmin(np.linalg.norm(ours_cam - ref_cam[:, i:i + 1], axis=0)))
        out.append(float(np.linalg.norm(ref_px[:, i] - ours_px[:, j])))
    return out


def ours_in_camera(box: torch.Tensor, T_ego_from_cam: torch.Tensor, K: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A converted ego box's corners in the camera ``[3, 8]`` and their pixels ``[2, 8]``."""
    from hydranet.geometry import box_corners, invert_transform, transform_points

    cam = transform_points(invert_transform(T_ego_from_cam.double()), box_corners(box.double()))
    cam_np = cam.numpy().T
    return cam_np, project(K.double().numpy(), cam_np)


def summary(errors: dict[str, list[float]]) -> dict[str, Any]:
    """Max / mean corner error over every box, the number compared and the worst box."""
    flat = [e for v in errors.values() for e in v]
    worst = max(errors, key=lambda k: max(errors[k], default=0.0))
    return {"max_px": round(max(flat), 6), "mean_px": round(float(np.mean(flat)), 6), "boxes": len(errors),
            "corners": len(flat), "worst_box": worst}


def kitti(root: Path) -> dict[str, Any]:
    """Corner errors on KITTI 000008 (module docstring)."""
    from hydranet.data.sources import open_source
    from hydranet.data.sources.kitti import read_calib, read_labels

    folder = root / KITTI
    if not (folder / "label_2" / "000008.txt").is_file():
        return {"skipped": f"{folder} is absent"}
    src = open_source({"kind": "kitti", "root": str(folder), "depth": False})
    sample = src[0]
    calib = read_calib(folder / "calib" / "000008.txt")
    labels = [o for o in read_labels(folder / "label_2" / "000008.txt") if src.class_map.mapping.get(o.cls) is not None]
    boxes = sample.labels["objects3d"]["boxes"]
    assert len(boxes) == len(labels), (len(boxes), len(labels))
    P2 = calib.P2.numpy()
    T_cam2_from_rect = calib.T_cam2_from_rect.numpy()
    errors = {}
    for k, (o, box) in enumerate(zip(labels, boxes, strict=True)):
        rect = kitti_corners_rect(*o.hwl, o.location, o.rotation_y)
        ref_cam = (T_cam2_from_rect @ np.vstack([rect, np.ones((1, 8))]))[:3]  # camera 2 (for pairing only)
        ours_cam, ours_px = ours_in_camera(box, sample.T_ego_from_cam[0], sample.intrinsics[0])
        errors[f"{k}:{o.cls}"] = corner_errors(ref_cam, project(P2, rect), ours_cam, ours_px)
    return summary(errors)


def nuscenes(root: Path) -> dict[str, Any]:
    """Corner errors on the nuScenes v1.0-mini keyframe (module docstring)."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    from hydranet.data.sources import open_source
    from hydranet.data.sources.nuscenes_labels import track_id

    dataroot = root / NUSCENES
    if not (dataroot / "v1.0-mini" / "sample.json").is_file():
        return {"skipped": f"{dataroot} is absent"}
    src = open_source({"kind": "nuscenes", "dataroot": str(dataroot), "filter_empty": False,
                       "labels": ["objects3d"]})
    sample = src[0]
    nusc = src.nusc
    record = nusc.get("sample", src.keyframes[0][2])
    o = sample.labels["objects3d"]
    by_track = {int(t): i for i, t in enumerate(o["track_id"].tolist())}
    errors = {}
    for n, cam in enumerate(src.camera_names):
        _, boxes, K = nusc.get_sample_data(record["data"][cam], box_vis_level=BoxVisibility.ANY)
        for box in boxes:
            i = by_track.get(track_id(nusc.get("sample_annotation", box.token)["instance_token"]))
            if i is None:
                continue
            ref_cam = box.corners()
            ours_cam, ours_px = ours_in_camera(o["boxes"][i], sample.T_ego_from_cam[n], sample.intrinsics[n])
            errors[f"{cam}:{box.name}:{box.token[:8]}"] = corner_errors(
                ref_cam, view_points(ref_cam, np.asarray(K), normalize=True)[:2], ours_cam, ours_px)
    return summary(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REAL, help="the realdata folder (default ../shared/realdata)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {"benchmark": "converter_geometry", "goal_max_px": 1.0, "kitti": kitti(args.root),
           "nuscenes": nuscenes(args.root)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
