"""The one data contract: ``Sample`` (one frame of the rig) and ``Batch`` (a collated list).

Every source — the synthetic world, shards on disk, a user's own loader — produces ``Sample``.
Labels are keyed by *label name*; most label names equal the task that consumes them
(see ``LABEL_SPECS``). A label may be missing from a sample: partial labels are normal, and
``collate`` records a per-label presence mask so losses and metrics skip absent ones.

Label formats (N = cameras, H×W = image size, tensors on CPU):

dense (one tensor per sample, stacked by collate; absent → zeros + present=False)
  ``drivable``      uint8  [N, H, W]  1 = drivable road surface
  ``lanes``         uint8  [N, H, W]  0 none, 1 dashed marking, 2 solid marking, 3 road edge
  ``depth``         float32[N, H, W]  z-depth in metres along the camera axis; 0 = no return (sky)
  ``semantic``      uint8  [N, H, W]  per-pixel class id, see ``SEMANTIC_CLASSES``
  ``instance``      int32  [N, H, W]  per-pixel instance id (0 = none), same ids as ``track_id``
  ``bev_semantic``  uint8  [C, R, C'] multi-label BEV map on the ``BevGrid``, see ``BEV_CLASSES``
  ``bev_semantic_known`` uint8 [C]    1 where a ``bev_semantic`` channel is labelled (absent: all are;
                    written by sources without a map, not by the world)
  ``ego_path``      float32[T, 3]     future ego (x, y, yaw) in the current ego frame, next 3 s

ragged (a dict of tensors per sample, collated to a list; absent → None); fields marked * are required,
the others optional
  ``detection2d``   boxes* float32[M,4] (x1,y1,x2,y2 px), classes* int64[M], camera* int64[M],
                    visible float32[M] (visible fraction 0..1), track_id int64[M]
  ``traffic_light`` boxes* float32[L,4], camera* int64[L], state* int64[L] (``LIGHT_STATES``),
                    lane int64[L] (lane index the light governs, ego-relative: 0 = ego lane,
                    +1 left, -1 right), track_id int64[L]
  ``objects3d``     boxes* float32[M,7] (x,y,z,l,w,h,yaw ego), classes* int64[M], velocity float32[M,2]
                    (vx,vy ego m/s; NaN = unknown), track_id int64[M], visible float32[M]
                    (largest visible fraction over the cameras, 0 = occluded in every camera)
  ``lane_lines``    points* float32[L,P,3] (ego-frame polylines resampled to P points),
                    kind* int64[L] (1 dashed, 2 solid, 3 road edge)

Validation (``Sample.validate``, run on every sample a source produces: when it is written to shards by
``convert``, ``generate`` or ``label``, decoded from them, or rendered by the world — one rule for every
converter and reader): shapes, dtypes and finite numbers (geometry float32; dense labels the dtype and shape
above; a ragged label's fields one length, ids integer, coordinates float), values float32 can carry (a
timestamp within 10^6 s of its sequence's start, an ego position within 100 km of the world origin), then the
geometry and labels are checked where they enter, never stored as given:

- every pose is **rigid**: ``T_world_from_ego`` and each ``T_ego_from_cam`` have an orthonormal rotation
  with determinant +1 (to ``RIGID_TOLERANCE``) and last row ``0 0 0 1``;
- each ``K`` is a pinhole matrix: ``fx, fy > 0`` and last row ``0 0 1``;
- 2D boxes are ``x1 <= x2, y1 <= y2`` on an existing camera (an inverted box is a format error, e.g. x, y,
  w, h read as corners); 3D boxes have positive length, width and height.

The checks a reader runs to name the file and line of a value before it becomes a ``Sample``:
``check_rotation`` (KITTI ``R0_rect``), ``check_rigid``, ``check_map_size`` (a label map of another size than
its image would be stretched), ``hydranet.geometry.check_principal_point`` (a K for another resolution than
its image), ``check_unique`` (the same frame listed twice), ``check_boxes``. Each raises
``ValueError`` (``SourceError`` where the caller passes it) naming ``where`` and the field; the CLI exits 2.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hydranet.data.labels import (  # noqa: F401 - re-exported
    BEV_CLASSES,
    LANE_KINDS,
    LIGHT_STATES,
    OBJECT_CLASSES,
    SEMANTIC_CLASSES,
    LabelSpec,
    label_spec,
)
from hydranet.geometry import check_intrinsics, is_pinhole

# Vocabularies live with the label specs (labels.py); re-exported here for existing imports.
# The built-in label names of the synthetic world. Which labels exist, and whether they are dense or
# ragged, is the label registry's business (``hydranet.data.labels``): tasks declare their labels.
_DENSE_LABELS: frozenset[str] = frozenset(
    {"drivable", "lanes", "depth", "semantic", "instance", "bev_semantic", "ego_path"})
RAGGED_LABELS: frozenset[str] = frozenset({"detection2d", "traffic_light", "objects3d", "lane_lines"})
ALL_LABELS: frozenset[str] = _DENSE_LABELS | RAGGED_LABELS


@dataclass
class Sample:
    """One instant of the rig. Images are uint8; geometry is float32."""

    images: Tensor  # uint8 [N, 3, H, W]
    intrinsics: Tensor  # float32 [N, 3, 3]
    T_ego_from_cam: Tensor  # float32 [N, 4, 4]
    T_world_from_ego: Tensor  # float32 [4, 4]
    timestamp: float  # seconds since the start of the sequence
    scene_id: str
    camera_names: tuple[str, ...]
    frame_index: int = 0  # index within the scene's sequence
    labels: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str | None = None) -> None:
        """Raise ``ValueError`` naming ``where`` (default: the scene and frame) and the field when shapes or
        dtypes are wrong (module docstring), when a pose, intrinsics, timestamp or float label (boxes, velocities,
        depth, ...) holds NaN/inf -- non-finite numbers would otherwise surface deep inside a loss --, when the
        timestamp or the ego position is too far from its origin for float32, or when a pose, K or box breaks
        the geometry rules (``check_sample_content``)."""
        where = where or f"sample {self.scene_id}#{self.frame_index}"
        n = len(self.camera_names)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[:2] != (n, 3):
            raise ValueError(f"{where}: images must be uint8 [N={n}, 3, H, W], got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        h, w = self.images.shape[-2:]
        checks = {"intrinsics": (n, 3, 3), "T_ego_from_cam": (n, 4, 4), "T_world_from_ego": (4, 4)}
        for name, shape in checks.items():
            t = getattr(self, name)
            if not isinstance(t, Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{where}: {name} must be float32 {shape}, got {got}")
        _check_finite(self, where)  # first: a NaN is the more useful message than a missing field
        _check_float32_range(self, where)
        for key, value in self.labels.items():
            try:
                spec = label_spec(key)
            except KeyError as e:
                raise ValueError(f"{where}: {e.args[0]}") from None
            if spec.kind == "ragged":
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: label '{key}' must be a dict of tensors ({spec.shape})")
                missing = [f for f in spec.fields if f not in value]
                if missing:
                    raise ValueError(f"{where}: label '{key}' lacks field(s) {missing} ({spec.shape})")
            elif not isinstance(value, Tensor):
                raise ValueError(f"{where}: label '{key}' must be a tensor {spec.shape}, got {type(value).__name__}")
            elif spec.per_camera and tuple(value.shape) != (n, h, w):
                raise ValueError(f"{where}: label '{key}' must be [N, H, W]={(n, h, w)}, got {tuple(value.shape)}")
            if spec.kind == "dense":
                _check_dense(key, value, spec, where)
            else:
                _check_ragged(key, value, where)
        check_sample_content(self, where)  # rigid poses, pinhole K, boxes that are boxes


def _nonfinite(t: Any) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())


def _check_finite(sample: Sample, where: str) -> None:
    """Poses, intrinsics, timestamp and every float label tensor must be finite; a label field its spec
    lists in ``nan_fields`` may hold NaN = "unknown" (e.g. nuScenes velocity of a lone keyframe), not inf."""
    for name in ("intrinsics", "T_ego_from_cam", "T_world_from_ego"):
        if _nonfinite(getattr(sample, name)):
            raise ValueError(f"{where}: {name} holds non-finite values (NaN or inf)")
    if not math.isfinite(float(sample.timestamp)):
        raise ValueError(f"{where}: timestamp is {sample.timestamp}, expected a finite number of seconds")
    for key, value in sample.labels.items():
        fields = value.items() if isinstance(value, dict) else [(None, value)]
        try:
            unknown_ok = label_spec(key).nan_fields
        except KeyError:  # reported by validate's label loop
            unknown_ok = ()
        for field_name, t in fields:
            if field_name in unknown_ok and isinstance(t, Tensor) and t.is_floating_point():
                if bool(torch.isinf(t).any()):
                    raise ValueError(f"{where}: label '{key}.{field_name}' holds non-finite values (inf; NaN "
                                     "would mark unknown values)")
                continue
            if _nonfinite(t):
                label = f"{key}.{field_name}" if field_name else key
                raise ValueError(f"{where}: label '{label}' holds non-finite values (NaN or inf)")


# Float32 keeps about 7 significant digits: a timestamp or a pose translation far from its origin loses what the
# model reads from differences (a 0.1 s step at 1.7e9 s, an epoch time, is below float32's 128 s resolution; a
# translation of 1e6 m, a UTM coordinate, keeps 6 cm). The contract's origins keep them small: timestamps count
# from the sequence's start, and a world frame's origin lies near the drive.
_MAX_TIMESTAMP_S = 1e6  # 11.6 days: beyond it a "seconds since the start of the sequence" is an absolute time
MAX_WORLD_TRANSLATION_M = 1e5  # 100 km from the world origin: float32 still resolves 8 mm there


def _check_float32_range(sample: Sample, where: str) -> None:
    """Refuse a timestamp or an ego position whose float32 value would lose the differences between frames."""
    if abs(float(sample.timestamp)) > _MAX_TIMESTAMP_S:
        raise ValueError(f"{where}: timestamp {sample.timestamp} s looks absolute (epoch time?): a Sample's timestamp "
                         f"counts seconds from the start of its sequence (|t| <= {_MAX_TIMESTAMP_S:g}); float32 would "
                         "lose the frame-to-frame intervals the video memory reads. Subtract the sequence's first "
                         "timestamp")
    far = float(sample.T_world_from_ego[:3, 3].abs().max())
    if far > MAX_WORLD_TRANSLATION_M:
        raise ValueError(f"{where}: T_world_from_ego's translation is {far:.0f} m from the world origin (> "
                         f"{MAX_WORLD_TRANSLATION_M:g} m): float32 poses lose the ego motion between frames there. "
                         "Express the poses in a world frame whose origin is near the drive (e.g. the sequence's first "
                         "pose's position)")


# The dtype words of LabelSpec.dtype (dense labels) as torch dtypes.
_DTYPES = {"uint8": torch.uint8, "int32": torch.int32, "int64": torch.int64, "float32": torch.float32}


def _check_dense(key: str, value: Tensor, spec: LabelSpec, where: str) -> None:
    """A dense label's dtype and, when it is not per camera, its shape as ``spec.shape`` writes it (``"[T, 3]"``:
    two axes, the second 3; ``"[C, R, C']"``: three axes, C the size of the label's vocabulary)."""
    dtype = _DTYPES.get(spec.dtype)
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{where}: label '{key}' must be {spec.dtype} {spec.shape}, got {value.dtype}")
    if spec.per_camera:
        return
    axes = [a.strip() for a in spec.shape.strip("[]").split(",")]
    sizes = {a: int(a) for a in axes if a.isdigit()}
    if spec.vocabulary is not None:
        sizes["C"] = len(spec.vocabulary)
    if value.ndim != len(axes) or any(value.shape[i] != sizes[a] for i, a in enumerate(axes) if a in sizes):
        raise ValueError(f"{where}: label '{key}' must be {spec.shape}"
                         + (f" with C = {sizes['C']}" if "C" in sizes and "C" in axes else "")
                         + f", got {tuple(value.shape)}")


def _check_ragged(key: str, value: dict[str, Any], where: str) -> None:
    """Every tensor field of a ragged label describes the same objects (one length), ids and indices are integers
    and coordinates are floats."""
    lengths = {f: len(t) for f, t in value.items() if isinstance(t, Tensor) and t.ndim >= 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: label '{key}' fields describe different numbers of objects: {lengths}")
    for f, t in value.items():
        if not isinstance(t, Tensor):
            continue
        if f in _INTEGER_FIELDS and (t.is_floating_point() or t.is_complex()):
            raise ValueError(f"{where}: label '{key}.{f}' must be an integer tensor (int64), got {t.dtype}")
        if f in _FLOAT_FIELDS and not t.is_floating_point():
            raise ValueError(f"{where}: label '{key}.{f}' must be a float tensor (float32), got {t.dtype}")


_INTEGER_FIELDS = frozenset({"classes", "camera", "state", "lane", "track_id", "kind"})
_FLOAT_FIELDS = frozenset({"boxes", "visible", "velocity", "points"})


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
    k_bad = ~is_pinhole(sample.intrinsics)
    if not bool((err <= RIGID_TOLERANCE).all() and (rows <= 1e-6).all()):
        check_rigid(sample.T_world_from_ego, f"{where}: T_world_from_ego")
        for n in range(len(names)):
            check_rigid(sample.T_ego_from_cam[n], f"{where}: T_ego_from_cam[{n}] (camera {names[n]})")
    if bool(k_bad.any()):
        n = int(k_bad.nonzero()[0])
        check_intrinsics(sample.intrinsics[n], f"{where}: intrinsics[{n}] (camera {names[n]})")
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


@dataclass
class Batch:
    """Collated samples. ``labels[name]`` is a stacked tensor (dense) or a list (ragged);
    ``present[name]`` is a bool tensor ``[B]``."""

    images: Tensor  # uint8 [B, N, 3, H, W]
    intrinsics: Tensor  # float32 [B, N, 3, 3]
    T_ego_from_cam: Tensor  # float32 [B, N, 4, 4]
    T_world_from_ego: Tensor  # float32 [B, 4, 4]
    timestamp: Tensor  # float64 [B]
    scene_id: list[str]
    frame_index: Tensor  # int64 [B]
    camera_names: tuple[str, ...]
    labels: dict[str, Any]
    present: dict[str, Tensor]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """Move tensors (geometry, images, labels) to ``device``; images stay uint8."""

        def move(x: Any) -> Any:
            if isinstance(x, Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, list):
                return [move(v) for v in x]
            return x

        return Batch(
            images=move(self.images), intrinsics=move(self.intrinsics), T_ego_from_cam=move(self.T_ego_from_cam),
            T_world_from_ego=move(self.T_world_from_ego), timestamp=self.timestamp, scene_id=self.scene_id,
            frame_index=self.frame_index, camera_names=self.camera_names, labels=move(self.labels),
            present={k: v.to(device) for k, v in self.present.items()},
        )


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a ``Batch`` keeping a presence mask per label.

    Rigs must agree on camera names and image size within a batch; K and T may differ per sample.
    """
    if not samples:
        raise ValueError("collate: empty list of samples")
    names = samples[0].camera_names
    shape = tuple(samples[0].images.shape)
    for i, s in enumerate(samples):
        if s.camera_names != names:
            raise ValueError(f"collate: sample {i} ({s.scene_id}#{s.frame_index}) has cameras {s.camera_names}, "
                             f"expected {names}")
        if tuple(s.images.shape) != shape:
            raise ValueError(f"collate: sample {i} ({s.scene_id}#{s.frame_index}) has images "
                             f"{tuple(s.images.shape)}, expected {shape}")
    keys = sorted({k for s in samples for k in s.labels})
    labels: dict[str, Any] = {}
    present: dict[str, Tensor] = {}
    for key in keys:
        mask = torch.tensor([key in s.labels for s in samples])
        present[key] = mask
        values = [s.labels.get(key) for s in samples]
        if label_spec(key).kind == "ragged":
            labels[key] = values
        else:
            template = next(v for v in values if v is not None)
            labels[key] = torch.stack([v if v is not None else torch.zeros_like(template) for v in values])
    return Batch(
        images=torch.stack([s.images for s in samples]),
        intrinsics=torch.stack([s.intrinsics for s in samples]),
        T_ego_from_cam=torch.stack([s.T_ego_from_cam for s in samples]),
        T_world_from_ego=torch.stack([s.T_world_from_ego for s in samples]),
        timestamp=torch.tensor([s.timestamp for s in samples], dtype=torch.float64),
        scene_id=[s.scene_id for s in samples],
        frame_index=torch.tensor([s.frame_index for s in samples], dtype=torch.int64),
        camera_names=names,
        labels=labels,
        present=present,
    )
