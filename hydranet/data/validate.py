"""Geometry and labels are checked where they enter, never stored as given.

``check_sample_content(sample, where)`` runs inside ``Sample.validate``, so every sample a source produces
is checked when it is written to shards (``convert``, ``generate``, ``label``), decoded from them, or
rendered by the world — one rule for every converter and reader:

- every pose is **rigid**: ``T_world_from_ego`` and each ``T_ego_from_cam`` have an orthonormal rotation
  with determinant +1 (to ``RIGID_TOLERANCE``) and last row ``0 0 0 1``;
- each ``K`` is a pinhole matrix: ``fx, fy > 0`` and last row ``0 0 1``;
- 2D boxes are ``x1 <= x2, y1 <= y2`` on an existing camera (an inverted box is a format error, e.g. x, y,
  w, h read as corners); 3D boxes have positive length, width and height.

The helpers below let a reader name the file and line of a value before it becomes a ``Sample``:
``check_rotation`` (KITTI ``R0_rect``), ``check_rigid``, ``check_map_size`` (a label map of another size than
its image would be stretched), ``check_unique`` (the same frame listed twice). Each raises ``ValueError``
(``SourceError`` where the caller passes it) naming ``where`` and the field; the CLI exits 2.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import torch
from torch import Tensor

RIGID_TOLERANCE = 5e-3  # max |R^T R - I| and |det R - 1|: float32 calibrations are orthonormal to ~1e-6


def _rotation_error(R: Tensor) -> float:
    """How far ``R`` [3, 3] is from a rotation: max of ``|R^T R - I|`` and ``|det R - 1|``."""
    R = R.double()
    ortho = (R.T @ R - torch.eye(3, dtype=R.dtype)).abs().max()
    return float(torch.maximum(ortho, (torch.linalg.det(R) - 1).abs()))


def check_rotation(R: Any, where: str, error: type[Exception] = ValueError) -> None:
    """Refuse a 3x3 matrix that is not a rotation (orthonormal, determinant +1)."""
    R = torch.as_tensor(R, dtype=torch.float64)
    err = _rotation_error(R)
    if not err <= RIGID_TOLERANCE:  # also catches NaN
        raise error(f"{where}: not a rotation (|R^T R - I|, |det R - 1| up to {err:.3g} > {RIGID_TOLERANCE:g}): "
                    "a scaled, sheared or mirrored matrix would distort every point it maps")


def check_rigid(T: Any, where: str, error: type[Exception] = ValueError) -> None:
    """Refuse a 4x4 transform that is not rigid (rotation + translation, last row 0 0 0 1)."""
    T = torch.as_tensor(T, dtype=torch.float64)
    if tuple(T.shape) != (4, 4):
        raise error(f"{where}: expected a 4x4 transform, got shape {tuple(T.shape)}")
    if not torch.allclose(T[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype), atol=1e-6):
        raise error(f"{where}: not a rigid transform (last row {T[3].tolist()}, expected [0, 0, 0, 1])")
    err = _rotation_error(T[:3, :3])
    if not err <= RIGID_TOLERANCE:
        raise error(f"{where}: not a rigid transform: its rotation is scaled, sheared or mirrored (|R^T R - I|, "
                    f"|det R - 1| up to {err:.3g} > {RIGID_TOLERANCE:g})")


def _check_intrinsics(K: Tensor, where: str, error: type[Exception] = ValueError) -> None:
    """Refuse a ``K`` that is not a pinhole matrix (fx, fy > 0; last row 0 0 1)."""
    K = K.double()
    if not (K[0, 0] > 0 and K[1, 1] > 0) or not torch.allclose(K[2], torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype),
                                                               atol=1e-6):
        raise error(f"{where}: not a pinhole K (need fx, fy > 0 and last row [0, 0, 1]), got {K.tolist()}")


def check_map_size(shape: tuple[int, ...], image_hw: tuple[int, int], where: str,
                   error: type[Exception] = ValueError) -> None:
    """Refuse a label map whose ``[H, W]`` differs from the image it labels (it would be stretched)."""
    if tuple(shape[-2:]) != tuple(image_hw):
        raise error(f"{where}: label map is {shape[-1]}x{shape[-2]} (WxH) but its image is {image_hw[1]}x{image_hw[0]}:"
                    " a map of another size would be stretched onto the image")


def check_unique(items: Iterable[tuple[Hashable, str]], what: str, error: type[Exception] = ValueError) -> None:
    """Refuse the same ``key`` twice among ``(key, where)`` pairs, naming both places."""
    seen: dict[Hashable, str] = {}
    for key, where in items:
        if key in seen:
            raise error(f"{where}: {what} {key} is listed twice (first at {seen[key]})")
        seen[key] = where


def check_sample_content(sample: Any, where: str) -> None:
    """The geometry and label rules of the module docstring on one ``Sample`` (shapes and finiteness are
    ``Sample.validate``'s, checked before this). Raises ``ValueError`` naming ``where`` and the field."""
    names = sample.camera_names
    # All poses at once (this runs for every sample read): only a failure is looked at one by one.
    T = torch.cat([sample.T_world_from_ego[None], sample.T_ego_from_cam]).double()
    R = T[:, :3, :3]
    err = torch.maximum((R.mT @ R - torch.eye(3, dtype=R.dtype)).abs().amax((1, 2)), (torch.linalg.det(R) - 1).abs())
    rows = (T[:, 3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype)).abs().amax(1)
    K = sample.intrinsics.double()
    k_bad = (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0) | ((K[:, 2] - torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype)).abs()
                                                     .amax(1) > 1e-6)
    if not bool((err <= RIGID_TOLERANCE).all() and (rows <= 1e-6).all()):
        check_rigid(sample.T_world_from_ego, f"{where}: T_world_from_ego")
        for n in range(len(names)):
            check_rigid(sample.T_ego_from_cam[n], f"{where}: T_ego_from_cam[{n}] (camera {names[n]})")
    if bool(k_bad.any()):
        n = int(k_bad.nonzero()[0])
        _check_intrinsics(sample.intrinsics[n], f"{where}: intrinsics[{n}] (camera {names[n]})")
    for key, value in sample.labels.items():
        if isinstance(value, dict) and isinstance(value.get("boxes"), Tensor):
            check_boxes(key, value["boxes"], f"{where}: label {key}", len(names), value.get("camera"))


def check_boxes(label: str, boxes: Tensor, where: str, cameras: int | None = None, camera: Any = None,
                error: type[Exception] = ValueError) -> None:
    """Refuse inverted 2D boxes ``[M, 4]`` (x1 > x2 or y1 > y2), 3D boxes ``[M, 7]`` (``objects3d``) without a
    positive length, width and height, and camera indices outside ``cameras``; ``where`` names the label."""
    if boxes.ndim != 2 or not len(boxes):
        return
    if label == "objects3d" and boxes.shape[-1] >= 6:
        bad = (boxes[:, 3:6] <= 0).any(1).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise error(f"{where}.boxes[{i}] has size (l, w, h) {[round(float(x), 3) for x in boxes[i, 3:6]]}: "
                        f"sizes must be > 0 ({len(bad)} such box(es))")
    elif boxes.shape[-1] == 4:
        bad = ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise error(f"{where}.boxes[{i}] {[round(float(x), 2) for x in boxes[i]]} is inverted (x1 > x2 or "
                        f"y1 > y2; boxes are x1, y1, x2, y2) ({len(bad)} such box(es))")
        if cameras is not None and isinstance(camera, Tensor) and len(camera) and (
                int(camera.min()) < 0 or int(camera.max()) >= cameras):
            raise error(f"{where}.camera holds camera index {int(camera.max())} or {int(camera.min())}, the rig "
                        f"has {cameras} camera(s)")
