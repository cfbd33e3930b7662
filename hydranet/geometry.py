"""The single source of truth for frames, camera projection and the BEV grid (the rig is ``hydranet.setup``).

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
from typing import Annotated, Any

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from torch import Tensor

from hydranet.limits import check_bev_cells

__all__ = ["BevGrid", "EGO_FROM_OPENCV", "box_corners", "camera_extrinsics", "check_finite_cameras",
           "check_intrinsics", "check_principal_point", "check_principal_points", "intrinsics_from_fov",
           "invert_transform", "is_pinhole", "make_transform", "principal_point_inside", "project", "ray_directions",
           "resize_intrinsics", "transform_points", "wrap_angle", "yaw_transform"]

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
EGO_FROM_OPENCV = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> Tensor:
    """Square-pixel pinhole K whose horizontal field of view is ``hfov_deg``."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def camera_extrinsics(position: tuple[float, float, float], yaw_deg: float, pitch_deg: float,
                      roll_deg: float = 0.0) -> Tensor:
    """``T_ego_from_cam`` ``[4, 4]`` float64 for a camera at ``position`` (ego, m) turned ``yaw`` left of +x,
    tilted ``pitch`` *down* (positive pitch looks at the ground) and rolled ``roll`` about its optical axis
    (positive turns the image clockwise as seen from behind the camera: ego +y towards -z).

    ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll) @ R_ego_from_opencv`` (intrinsic z-y-x, the nuScenes/ISO order);
    ``camera_angles`` inverts it."""
    # Pitch down = rotation about the ego y axis by +pitch (x towards -z), applied before yaw.
    R = rot_z(math.radians(yaw_deg)) @ rot_y(math.radians(pitch_deg))
    if roll_deg:  # no Rx(0) product for an unrolled camera: its T stays bit-identical to yaw/pitch alone
        R = R @ rot_x(math.radians(roll_deg))
    R = R @ EGO_FROM_OPENCV
    return make_transform(R, torch.tensor(position, dtype=torch.float64))


def camera_angles(T_ego_from_cam: Tensor) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a camera's ``T_ego_from_cam`` (inverse of ``camera_extrinsics``;
    at pitch = +-90 deg roll is folded into yaw)."""
    R = torch.as_tensor(T_ego_from_cam, dtype=torch.float64)[:3, :3] @ EGO_FROM_OPENCV.T  # = Rz Ry Rx
    pitch = math.asin(max(-1.0, min(1.0, float(-R[2, 0]))))
    yaw = math.atan2(float(R[1, 0]), float(R[0, 0]))
    roll = math.atan2(float(R[2, 1]), float(R[2, 2]))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


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


def is_pinhole(intrinsics: Tensor) -> Tensor:
    """Whether each ``K [..., 3, 3]`` (pixels) is a pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with
    fx, fy > 0 (the last row to 1e-6). Bool ``[...]``. Every projection here reads fx, fy, cx, cy only, so a skew
    or another last row would be silently dropped."""
    K = intrinsics.double()
    last = (K[..., 2, :] - torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype)).abs().amax(-1)
    return (K[..., 0, 0] > 0) & (K[..., 1, 1] > 0) & (K[..., 0, 1] == 0) & (K[..., 1, 0] == 0) & (last <= 1e-6)


def check_intrinsics(K: Any, where: str, error: type[Exception] = ValueError) -> None:
    """Refuse a 3x3 ``K`` (pixels; any array) that is not a pinhole matrix (``is_pinhole``): ``error`` naming
    ``where``. The one pinhole rule of ``hydranet.setup.Camera`` (a declared K), the data readers and the
    ``Sample`` content checks."""
    K = torch.as_tensor(K, dtype=torch.float64)
    if not bool(is_pinhole(K)):
        raise error(f"{where}: not a pinhole K (need [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 and no "
                    f"skew), got {K.tolist()}")


def principal_point_inside(intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Whether each pinhole K ``[..., 3, 3]`` (pixels) puts its principal point where one of an ``image_hw = (H, W)``
    image lies: ``W/4 < cx < 3W/4`` and ``0 <= cy <= H`` (the image spans its pixel edges, as ``resize_intrinsics``
    scales it). Bool ``[...]``. Elsewhere, K is almost always one for another resolution: real rigs sit near the
    centre (nuScenes, KITTI, Argoverse: 0.38..0.56 of each side), so a K for an image twice as wide puts cx at the
    right edge. Vertically a crop (the sky or the bonnet cut off) moves cy far from the centre, so only inside
    the image is asked there."""
    h, w = image_hw
    cx, cy = intrinsics[..., 0, 2], intrinsics[..., 1, 2]
    return (cx > w / 4) & (cx < 3 * w / 4) & (cy >= 0) & (cy <= h)


def check_principal_point(K: Any, image_hw: tuple[int, int], where: str, error: type[Exception] = ValueError) -> None:
    """Refuse one 3x3 ``K`` (pixels; any array) whose principal point lies outside its ``image_hw = (H, W)`` image
    (``principal_point_inside``): ``error`` naming ``where``. The data readers check each camera with it, and
    ``hydranet.setup.Camera`` its declared K."""
    K = torch.as_tensor(K, dtype=torch.float64)
    if not bool(principal_point_inside(K, image_hw)):
        h, w = image_hw
        raise error(f"{where}: principal point (cx, cy) = ({float(K[0, 2]):g}, {float(K[1, 2]):g}) does not lie in the "
                    f"{w}x{h} (WxH) image with cx in its middle half: a K for another resolution? K must be in "
                    "pixels of this image")


def check_finite_cameras(intrinsics: Tensor, T_ego_from_cam: Tensor, where: str = "") -> None:
    """Refuse a batch's K ``[B, N, 3, 3]`` or ``T_ego_from_cam [B, N, 4, 4]`` holding a NaN or inf, a failed camera's
    included (the projection reads every camera's before the mask applies): ``ValueError`` naming the tensor,
    prefixed by ``where``."""
    for name, t in (("intrinsics", intrinsics), ("T_ego_from_cam", T_ego_from_cam)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}{name} holds a non-finite value (NaN or inf): the camera geometry of every "
                             "sample must be finite, a failed camera's too")


def check_principal_points(intrinsics: Tensor, image_hw: tuple[int, int], camera_valid: Tensor | None = None,
                           where: str = "") -> None:
    """Refuse a batch's K ``[B, N, 3, 3]`` where a working camera (``camera_valid`` bool ``[B, N]``, None = all)
    puts its principal point outside the ``image_hw = (H, W)`` input (``principal_point_inside``): ``ValueError``
    naming the first such camera, prefixed by ``where`` (e.g. the graph's path). A failed camera's K is not read."""
    outside = ~principal_point_inside(intrinsics, image_hw)
    if camera_valid is not None:
        outside &= camera_valid.bool()
    if bool(outside.any()):
        b, n = (int(i) for i in outside.nonzero()[0])
        raise ValueError(f"{where}intrinsics[{b}, {n}] puts the principal point (cx, cy) = "
                         f"({float(intrinsics[b, n, 0, 2]):g}, {float(intrinsics[b, n, 1, 2]):g}) where no K of the "
                         f"(H, W) = {tuple(image_hw)} input puts it (cx in the middle half, cy inside): K must be in "
                         "the input's pixels "
                         "(hydranet.setup.Camera.K(image_size) rescales a camera's native K)")


# --------------------------------------------------------------------------------------------
# BEV grid
# --------------------------------------------------------------------------------------------


def _number(v: Any) -> float:
    """A finite number from a config or manifest; a string or bool is refused (JSON writes ``2.0`` as a
    number, users write ``2``; neither writes ``"2"``)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


Metres = Annotated[float, BeforeValidator(_number)]


class BevGrid(BaseModel):
    """The BEV grid: the tensor layout of every BEV input, label and output (ego frame, metres).

    Rows run from ``x_max`` (row 0) down to ``x_min``; columns from ``y_max`` (col 0) to ``y_min``. One
    class serves as the config/YAML schema, the record in shard and deploy manifests and the runtime
    object (frozen, hashable, compared by value); ``BevGrid((-8, 8), (-8, 8), 0.5)`` works positionally.
    Validation raises ``ValueError`` for an inverted range, a span that is not whole cells, a cell
    <= 0, a non-finite number or a string.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    x_range: tuple[Metres, Metres] = (-32.0, 32.0)  # ego x (forward), metres
    y_range: tuple[Metres, Metres] = (-32.0, 32.0)  # ego y (left), metres
    cell: Metres = Field(0.5, gt=0.0)  # metres per cell

    def __init__(self, x_range: Any = (-32.0, 32.0), y_range: Any = (-32.0, 32.0), cell: Any = 0.5,
                 **data: Any) -> None:
        super().__init__(x_range=x_range, y_range=y_range, cell=cell, **data)

    @model_validator(mode="after")
    def _whole_cells(self) -> BevGrid:
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not hi > lo:
                raise ValueError(f"BevGrid.{name} must be (min, max) with max > min, got {(lo, hi)}")
            span = (hi - lo) / self.cell
            if abs(span - round(span)) > 1e-6:
                raise ValueError(f"BevGrid.{name} span {hi - lo} m is not a multiple of cell {self.cell} m")
        check_bev_cells(self.rows, self.cols, f"BevGrid (cell {self.cell} m over x {self.x_range}, y {self.y_range})")
        return self

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

    def describe(self) -> str:
        """``x (-32.0, 32.0) m, y (-32.0, 32.0) m, cell 1.0 m (64x64)``: the grid in error messages."""
        return (f"x {tuple(self.x_range)} m, y {tuple(self.y_range)} m, cell {self.cell} m "
                f"({self.rows}x{self.cols})")


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
