"""The single source of truth for frames, cameras, the rig and the BEV grid.

Conventions (see DESIGN.md):
- Ego frame: origin on the ground under the rear axle; x forward, y left, z up; metres, radians.
- Camera frame: OpenCV — x right, y down, z forward. ``K`` is 3×3 in pixels for the stored
  resolution; ``T_ego_from_cam`` is 4×4. Resizing an image rescales K and nothing else.
- BEV tensors are ``[C, rows, cols]``; row 0 is the *far forward* edge (max x) and column 0 the
  *far left* edge (max y), so a BEV tensor drawn as an image has the car driving up the page.

Everything works on torch tensors with arbitrary leading batch dimensions, so the same functions
serve the renderer (numpy-free), the fusion module (differentiable, per-sample K/T) and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from hydranet.limits import check_bev_cells

# --------------------------------------------------------------------------------------------
# SE(3)
# --------------------------------------------------------------------------------------------


def rot_x(a: float | Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` float64 by ``a`` radians about the x axis (right-handed, active)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def rot_y(a: float | Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` float64 by ``a`` radians about the y axis (right-handed, active)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def rot_z(a: float | Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` float64 by ``a`` radians about the z axis (yaw: +a turns x towards y)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def make_transform(rotation: Tensor, translation: Tensor) -> Tensor:
    """Build ``[..., 4, 4]`` from ``[..., 3, 3]`` rotation and ``[..., 3]`` translation."""
    rotation = torch.as_tensor(rotation)
    translation = torch.as_tensor(translation, dtype=rotation.dtype)
    batch = rotation.shape[:-2]
    T = torch.zeros(*batch, 4, 4, dtype=rotation.dtype)
    T[..., :3, :3] = rotation
    T[..., :3, 3] = translation
    T[..., 3, 3] = 1.0
    return T


def invert_transform(T: Tensor) -> Tensor:
    """Inverse of rigid transforms ``[..., 4, 4]`` without a general matrix inverse."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply ``T [..., 4, 4]`` to ``points [..., P, 3]`` (batch dims broadcast)."""
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def yaw_transform(x: float, y: float, yaw: float, z: float = 0.0) -> Tensor:
    """Planar pose (x, y, yaw) as a 4×4 float64 transform."""
    return make_transform(rot_z(yaw), torch.tensor([x, y, z], dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# Pinhole camera
# --------------------------------------------------------------------------------------------

# Rotation taking OpenCV camera axes to ego axes for a camera looking straight down ego +x:
# cam z (forward) -> ego x, cam x (right) -> ego -y, cam y (down) -> ego -z.
_EGO_FROM_CV = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> Tensor:
    """Square-pixel pinhole K whose horizontal field of view is ``hfov_deg``."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def camera_extrinsics(position: tuple[float, float, float], yaw_deg: float, pitch_deg: float) -> Tensor:
    """``T_ego_from_cam`` for a camera at ``position`` (ego, m) turned ``yaw`` left of +x and
    tilted ``pitch`` *down* (positive pitch looks at the ground)."""
    # Pitch down = rotation about the ego y axis by +pitch (x towards -z), applied before yaw.
    R = rot_z(math.radians(yaw_deg)) @ rot_y(math.radians(pitch_deg)) @ _EGO_FROM_CV
    return make_transform(R, torch.tensor(position, dtype=torch.float64))


def project(points_cam: Tensor, K: Tensor, image_hw: tuple[int, int] | None = None,
            min_depth: float = 0.1) -> tuple[Tensor, Tensor]:
    """Project camera-frame points ``[..., P, 3]`` with ``K [..., 3, 3]``.

    Returns pixels ``[..., P, 2]`` (u, v; pixel centres at +0.5) and a validity mask ``[..., P]``:
    in front of the camera by ``min_depth`` and, if ``image_hw`` is given, inside the image.
    """
    z = points_cam[..., 2]
    valid = z > min_depth
    z_safe = torch.where(valid, z, torch.ones_like(z))
    uvw = points_cam @ K.transpose(-1, -2)
    uv = uvw[..., :2] / z_safe[..., None]
    if image_hw is not None:
        h, w = image_hw
        valid = valid & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    return uv, valid


def unproject(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Pixels ``[..., P, 2]`` at z-depth ``[..., P]`` back to camera-frame points ``[..., P, 3]``."""
    ones = torch.ones_like(uv[..., :1])
    rays = torch.cat([uv, ones], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth[..., None]


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel-centre coordinates ``[H, W, 2]`` (u, v) in pixels, centres at +0.5, of ``dtype``."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype) + 0.5, torch.arange(width, dtype=dtype) + 0.5,
                          indexing="ij")
    return torch.stack([u, v], -1)


def ray_directions(K: Tensor, height: int, width: int) -> Tensor:
    """Camera-frame ray per pixel ``[..., H, W, 3]`` with z = 1 (so ``depth * ray`` is the point)."""
    uv = pixel_grid(height, width, K.dtype).reshape(-1, 2)
    ones = torch.ones_like(uv[:, :1])
    rays = torch.cat([uv, ones], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays.reshape(*K.shape[:-2], height, width, 3)


def resize_intrinsics(K: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """K for an image resized by (scale_x, scale_y); pixel centres stay consistent."""
    S = torch.tensor([[scale_x, 0.0, 0.0], [0.0, scale_y, 0.0], [0.0, 0.0, 1.0]], dtype=K.dtype)
    return S @ K


# --------------------------------------------------------------------------------------------
# The rig
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraSpec:
    """One camera's mounting and lens, independent of image size.

    ``position`` is in the ego frame (metres); ``yaw_deg`` turns left of ego +x, ``pitch_deg`` > 0
    looks down at the ground; ``hfov_deg`` is the horizontal field of view (square pixels).
    """
    name: str
    hfov_deg: float
    position: tuple[float, float, float]  # ego frame, metres
    yaw_deg: float  # left of forward
    pitch_deg: float  # positive looks down

    def intrinsics(self, width: int, height: int) -> Tensor:
        """Pinhole K ``[3, 3]`` float64 in pixels for a ``width`` × ``height`` image."""
        return intrinsics_from_fov(width, height, self.hfov_deg)

    def extrinsics(self) -> Tensor:
        """``T_ego_from_cam`` ``[4, 4]`` float64 (OpenCV camera axes to the ego frame, metres)."""
        return camera_extrinsics(self.position, self.yaw_deg, self.pitch_deg)


@dataclass(frozen=True)
class Rig:
    """Ordered, named cameras sharing one image size. Camera order in tensors is this order."""

    cameras: tuple[CameraSpec, ...]
    height: int = 128
    width: int = 256

    @property
    def names(self) -> tuple[str, ...]:
        """Camera names in tensor order."""
        return tuple(c.name for c in self.cameras)

    def __len__(self) -> int:
        return len(self.cameras)

    def intrinsics(self) -> Tensor:
        """Pinhole K per camera ``[N, 3, 3]`` float32, pixels at ``height`` × ``width``."""
        return torch.stack([c.intrinsics(self.width, self.height) for c in self.cameras]).float()

    def extrinsics(self) -> Tensor:
        """``T_ego_from_cam`` ``[N, 4, 4]`` float32: OpenCV camera frame to ego frame, metres."""
        return torch.stack([c.extrinsics() for c in self.cameras]).float()

    def resized(self, height: int, width: int) -> Rig:
        """The same cameras at a new image size (K is derived per size, so only H, W change)."""
        return Rig(self.cameras, height, width)

    def to_dict(self) -> dict:
        """JSON-ready form (image size and each camera's fields); inverse of ``from_dict``."""
        return {"height": self.height, "width": self.width,
                "cameras": [c.__dict__ | {"position": list(c.position)} for c in self.cameras]}

    @staticmethod
    def from_dict(d: dict) -> Rig:
        """Rebuild a rig from ``to_dict`` output; a missing key raises ``KeyError``."""
        cams = tuple(CameraSpec(**(c | {"position": tuple(c["position"])})) for c in d["cameras"])
        return Rig(cams, int(d["height"]), int(d["width"]))


# Mounting positions follow a mid-size sedan (wheelbase 2.9 m, rear axle at the origin):
# three forward cameras behind the windshield, B-pillar cameras looking side-forward, repeaters on
# the front fenders looking back along the sides, and a rear camera above the plate.
DEFAULT_CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec("main", 50.0, (1.60, 0.00, 1.40), 0.0, 2.0),
    CameraSpec("narrow", 35.0, (1.60, 0.05, 1.40), 0.0, 1.0),
    CameraSpec("wide", 120.0, (1.60, -0.05, 1.40), 0.0, 4.0),
    CameraSpec("left_pillar", 90.0, (1.10, 0.85, 1.25), 60.0, 5.0),
    CameraSpec("right_pillar", 90.0, (1.10, -0.85, 1.25), -60.0, 5.0),
    CameraSpec("left_repeater", 80.0, (2.30, 0.95, 0.95), 140.0, 5.0),
    CameraSpec("right_repeater", 80.0, (2.30, -0.95, 0.95), -140.0, 5.0),
    CameraSpec("rear", 110.0, (-0.90, 0.00, 1.05), 180.0, 12.0),
)


def default_rig(height: int = 128, width: int = 256) -> Rig:
    """The 8-camera sedan rig (``DEFAULT_CAMERAS``: 3 forward, 2 pillar, 2 repeater, 1 rear) at H × W pixels."""
    return Rig(DEFAULT_CAMERAS, height, width)


# --------------------------------------------------------------------------------------------
# BEV grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BevGrid:
    """Defines the tensor layout of every BEV input, label and output.

    Rows run from ``x_max`` (row 0) down to ``x_min``; columns from ``y_max`` (col 0) to ``y_min``.
    """

    x_range: tuple[float, float] = (-32.0, 32.0)
    y_range: tuple[float, float] = (-32.0, 32.0)
    cell: float = 0.5

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not hi > lo:
                raise ValueError(f"BevGrid.{name} must be (min, max) with max > min, got {(lo, hi)}")
            span = (hi - lo) / self.cell
            if abs(span - round(span)) > 1e-6:
                raise ValueError(f"BevGrid.{name} span {hi - lo} m is not a multiple of cell {self.cell} m")
        check_bev_cells(self.rows, self.cols, f"BevGrid (cell {self.cell} m over x {self.x_range}, y {self.y_range})")

    @property
    def rows(self) -> int:
        """Number of rows (along ego x, from ``x_max`` down)."""
        return round((self.x_range[1] - self.x_range[0]) / self.cell)

    @property
    def cols(self) -> int:
        """Number of columns (along ego y, from ``y_max`` down)."""
        return round((self.y_range[1] - self.y_range[0]) / self.cell)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``, the spatial shape of every BEV tensor."""
        return self.rows, self.cols

    def metres_to_index(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Continuous (row, col) for ego metres; cell centres sit at integer + 0.5."""
        row = (self.x_range[1] - x) / self.cell
        col = (self.y_range[1] - y) / self.cell
        return row, col

    def index_to_metres(self, row: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
        """Ego (x, y) metres for continuous (row, col); inverse of ``metres_to_index``."""
        return self.x_range[1] - row * self.cell, self.y_range[1] - col * self.cell

    def cell_indices(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Integer (row, col) of the cell holding each point, and whether it lies in the grid."""
        row, col = self.metres_to_index(x, y)
        r, c = torch.floor(row).long(), torch.floor(col).long()
        inside = (r >= 0) & (r < self.rows) & (c >= 0) & (c < self.cols)
        return r, c, inside

    def cell_centres(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Ego (x, y) of every cell centre, ``[rows, cols, 2]``."""
        r = torch.arange(self.rows, dtype=dtype) + 0.5
        c = torch.arange(self.cols, dtype=dtype) + 0.5
        rr, cc = torch.meshgrid(r, c, indexing="ij")
        x, y = self.index_to_metres(rr, cc)
        return torch.stack([x, y], -1)

    def to_dict(self) -> dict:
        """JSON-ready form (ranges and cell size in metres); inverse of ``from_dict``."""
        return {"x_range": list(self.x_range), "y_range": list(self.y_range), "cell": self.cell}

    @staticmethod
    def from_dict(d: dict) -> BevGrid:
        """Rebuild a grid from ``to_dict`` output; raises ``ValueError`` for an invalid range or cell."""
        return BevGrid(tuple(d["x_range"]), tuple(d["y_range"]), float(d["cell"]))


class GridConfig(BaseModel):
    """The config/YAML form of ``BevGrid``: the ONE schema the world (labels) and the model share, so
    a grid is written, validated and compared the same way everywhere (``hydranet.compat``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    x_range: tuple[float, float] = (-32.0, 32.0)  # ego x (forward), metres
    y_range: tuple[float, float] = (-32.0, 32.0)  # ego y (left), metres
    cell: float = Field(0.5, gt=0.0)  # metres per cell

    @model_validator(mode="after")
    def _check(self) -> GridConfig:
        self.to_grid()  # raises a ValueError naming the range
        return self

    def to_grid(self) -> BevGrid:
        """The ``BevGrid`` this config describes; raises ``ValueError`` naming a bad range."""
        return BevGrid(tuple(self.x_range), tuple(self.y_range), self.cell)


# --------------------------------------------------------------------------------------------
# 3D boxes
# --------------------------------------------------------------------------------------------


def box_corners(boxes: Tensor) -> Tensor:
    """Corners ``[..., 8, 3]`` of boxes ``[..., 7]`` = (x, y, z, length, width, height, yaw).

    ``z`` is the box *centre* height. Corner order: bottom face (front-left, front-right,
    rear-right, rear-left), then the top face in the same order.
    """
    x, y, z, l, w, h, yaw = boxes.unbind(-1)
    sx = torch.tensor([1, 1, -1, -1, 1, 1, -1, -1], dtype=boxes.dtype) * 0.5
    sy = torch.tensor([1, -1, -1, 1, 1, -1, -1, 1], dtype=boxes.dtype) * 0.5
    sz = torch.tensor([-1, -1, -1, -1, 1, 1, 1, 1], dtype=boxes.dtype) * 0.5
    lx, ly, lz = l[..., None] * sx, w[..., None] * sy, h[..., None] * sz
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    px = x[..., None] + c * lx - s * ly
    py = y[..., None] + s * lx + c * ly
    pz = z[..., None] + lz
    return torch.stack([px, py, pz], -1)


def wrap_angle(a: Tensor) -> Tensor:
    """Wrap angles (radians, any shape) to [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi
