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
  ``ego_path``      float32[T, 3]     future ego (x, y, yaw) in the current ego frame, next 3 s

ragged (a dict of tensors per sample, collated to a list; absent → None)
  ``detection2d``   boxes float32[M,4] (x1,y1,x2,y2 px), classes int64[M], camera int64[M],
                    visible float32[M] (visible fraction 0..1), track_id int64[M]
  ``traffic_light`` boxes float32[L,4], camera int64[L], state int64[L] (``LIGHT_STATES``),
                    lane int64[L] (lane index the light governs, ego-relative: 0 = ego lane,
                    +1 left, -1 right), track_id int64[L]
  ``objects3d``     boxes float32[M,7] (x,y,z,l,w,h,yaw ego), velocity float32[M,2] (vx,vy ego
                    m/s), classes int64[M], track_id int64[M]; optional visible float32[M]
                    (largest visible fraction over the cameras, 0 = occluded in every camera)
  ``lane_lines``    points float32[L,P,3] (ego-frame polylines resampled to P points),
                    kind int64[L] (1 dashed, 2 solid, 3 road edge)
"""

from __future__ import annotations

import math
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
    label_spec,
)
from hydranet.data.validate import check_sample_content

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
        dtypes are wrong, or when a pose, intrinsics, timestamp or float label (boxes, velocities, depth,
        ...) holds NaN/inf: non-finite numbers would otherwise surface deep inside a loss."""
        where = where or f"sample {self.scene_id}#{self.frame_index}"
        n = len(self.camera_names)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[:2] != (n, 3):
            raise ValueError(f"{where}: images must be uint8 [N={n}, 3, H, W], got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        h, w = self.images.shape[-2:]
        checks = {"intrinsics": (n, 3, 3), "T_ego_from_cam": (n, 4, 4), "T_world_from_ego": (4, 4)}
        for name, shape in checks.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(t.shape)}")
        _check_finite(self, where)  # first: a NaN is the more useful message than a missing field
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
        check_sample_content(self, where)  # rigid poses, pinhole K, boxes that are boxes (data/validate.py)


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
