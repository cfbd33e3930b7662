"""KITTI object detection benchmark (Geiger et al., CVPR 2012) as hydranet ``Sample``s: one camera (``image_2``).

Layout read (the official ``data_object_*`` zips unpacked)::

    ROOT/training/image_2/000008.png      left colour camera, rectified, ~1242x375
    ROOT/training/calib/000008.txt        P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo (3x4 / 3x3, row-major)
    ROOT/training/label_2/000008.txt      15 fields per object (absent for the testing split)
    ROOT/training/velodyne[_reduced]/000008.bin   float32 x, y, z, reflectance (optional, for sparse depth)

Frames (devkit ``readme.txt``):
- A label's ``location`` is the *bottom centre* of the box in rectified camera-0 coordinates
  (x right, y down, z forward); ``dimensions`` are height, width, length (m); ``rotation_y`` turns about the
  camera y axis, 0 = the car's length along camera +x. ``X_rect = R0_rect @ Tr_velo_to_cam @ X_velo`` and a
  rectified point projects into ``image_2`` by ``P2 = K2 [I | t2]`` (``t2 = K2^-1 P2[:, 3]``, the 6 cm offset
  of camera 2 from camera 0 in the rectified frame).
- **hydranet's ego frame for KITTI** has the axes of the rectified camera-0 frame turned to ego convention
  (x = z_rect forward, y = -x_rect left, z = -y_rect up) — the frame KITTI's boxes are upright in (they turn
  about y_rect only), so a 7-number ego box keeps their exact geometry (the Velodyne frame is tilted about
  0.85 deg from it) — and its origin on the road under the Velodyne: ``VELODYNE_HEIGHT`` = 1.73 m (the KITTI
  setup sheet's mounting height) below it along -z. The camera is ``T_ego_from_cam = T_ego_from_rect @
  T(t2)^-1`` with K = ``P2[:, :3]``, so a box corner projects exactly where ``P2`` puts the label's corner
  (``tests/data/test_converter_geometry.py``). KITTI object frames carry no pose: ``T_world_from_ego`` is the
  identity and the timestamp 0.

Labels produced (formats of ``hydranet.data.sample``):
- ``objects3d``: boxes (x, y, z centre, l, w, h, yaw) in the ego frame, yaw = ``-ry - pi/2`` (the heading
  ``(cos ry, 0, -sin ry)`` in the ego frame). No velocity (KITTI object has none): the field is left out.
  ``DontCare`` regions and classes the ``class_map`` does not map are dropped and counted
  (``class_map.report()``, the convert report).
- ``detection2d``: the label's 2D box (scaled with the image), ``visible`` = (1 - truncation) x
  ``OCCLUSION_VISIBLE[occluded]``, plus the raw ``truncated`` float32 and ``occluded`` int64 fields.
- ``depth`` (when a Velodyne file exists and ``depth=True``): sparse z-depth from the points projected into
  ``image_2`` (0 = no return); the reduced cloud of mmdet3d's ``velodyne_reduced`` works the same.

Config: ``{kind: kitti, root: DIR, image_size: [H, W], depth: true}``; CLI ``hydranet convert kitti --root DIR
--image-size 256x832 --out SHARDS``. Errors (missing file, wrong field count, non-finite number) raise
``SourceError`` naming file and line.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from hydranet.data.sample import Sample, check_rotation
from hydranet.data.sources.base import Source, SourceError, SourceOptions, register_source
from hydranet.data.sources.imaging import load_rgb, scale_boxes, sparse_depth
from hydranet.geometry import (
    EGO_FROM_OPENCV,
    check_intrinsics,
    make_transform,
    resize_intrinsics,
    transform_points,
)
from hydranet.limits import MIN_LIDAR_POINTS_DEFAULT, check_lidar_points, open_image
from hydranet.setup import Camera, ImageSize, Rig, Setup

_KITTI_CLASSES: tuple[str, ...] = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
# KITTI class -> a model class (config ``class_map`` overrides entries), kept where the model vocabulary has it.
# Van is a car-shaped vehicle; a Cyclist is nuScenes' "bicycle" (rider included, as nuScenes labels it), absent
# from the world's five; Tram and Misc have no model class and DontCare marks ignore regions: dropped and counted.
DEFAULT_CLASS_MAP: dict[str, str | None] = {"Car": "car", "Van": "car", "Truck": "truck", "Pedestrian": "pedestrian",
                                            "Person_sitting": "pedestrian", "Cyclist": "bicycle", "Tram": None,
                                            "Misc": None, "DontCare": None}
VELODYNE_HEIGHT = 1.73  # metres above the road (KITTI sensor setup)
# Visible fraction for KITTI's occlusion states 0 fully visible, 1 partly, 2 largely occluded, 3 unknown.
_OCCLUSION_VISIBLE: dict[int, float] = {0: 1.0, 1: 0.6, 2: 0.3, 3: 0.5}
_CALIB_KEYS = {"P2": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}


class KittiCalib:
    """Parsed ``calib/*.txt``: ``P2`` [3,4], ``R0_rect`` [3,3], ``Tr_velo_to_cam`` [3,4] as float64 tensors."""

    def __init__(self, P2: Tensor, R0_rect: Tensor, Tr_velo_to_cam: Tensor):
        self.P2, self.R0_rect, self.Tr_velo_to_cam = P2, R0_rect, Tr_velo_to_cam

    @property
    def K(self) -> Tensor:
        """Camera-2 intrinsics [3, 3] float64 (pixels at the file's resolution)."""
        return self.P2[:, :3].clone()

    @property
    def T_rect_from_velo(self) -> Tensor:
        """4x4: Velodyne -> rectified camera-0 frame (``R0_rect @ Tr_velo_to_cam``)."""
        R0 = torch.eye(4, dtype=torch.float64)
        R0[:3, :3] = self.R0_rect
        Tr = torch.eye(4, dtype=torch.float64)
        Tr[:3] = self.Tr_velo_to_cam
        return R0 @ Tr

    @property
    def T_cam2_from_rect(self) -> Tensor:
        """4x4 translation by ``t2 = K^-1 P2[:, 3]``: rectified camera-0 frame -> camera-2 (OpenCV) frame."""
        t2 = torch.linalg.solve(self.K, self.P2[:, 3])
        return make_transform(torch.eye(3, dtype=torch.float64), t2)

    @property
    def T_ego_from_rect(self) -> Tensor:
        """4x4 float64: rectified camera-0 frame -> ego (the rectified axes in ego convention, origin on the
        road ``VELODYNE_HEIGHT`` metres below the Velodyne along the rectified camera's down axis)."""
        velodyne = self.T_rect_from_velo[:3, 3]
        origin = velodyne + torch.tensor([0.0, VELODYNE_HEIGHT, 0.0], dtype=torch.float64)  # rect y points down
        return make_transform(EGO_FROM_OPENCV, -EGO_FROM_OPENCV @ origin)

    @property
    def T_ego_from_cam(self) -> Tensor:
        """4x4 float64: camera 2 (OpenCV) -> ego (Velodyne frame on the ground)."""
        return self.T_ego_from_rect @ torch.linalg.inv(self.T_cam2_from_rect)


class KittiObjectLabel:
    """One ``label_2`` line (devkit field order)."""

    __slots__ = ("cls", "truncated", "occluded", "alpha", "box2d", "hwl", "location", "rotation_y")

    def __init__(self, cls: str, truncated: float, occluded: int, alpha: float, box2d: list[float],
                 hwl: list[float], location: list[float], rotation_y: float):
        self.cls, self.truncated, self.occluded, self.alpha = cls, truncated, occluded, alpha
        self.box2d, self.hwl, self.location, self.rotation_y = box2d, hwl, location, rotation_y


def _numbers(values: list[str], where: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except ValueError as e:
        raise SourceError(f"{where}: not a number ({e})") from e
    if not all(math.isfinite(v) for v in out):
        raise SourceError(f"{where}: non-finite number in {values}")
    return out


def read_calib(path: str | os.PathLike) -> KittiCalib:
    """Parse a KITTI object ``calib/*.txt`` (``KEY: v1 v2 ...`` lines). Raises ``SourceError`` naming the
    file and key when one of P2, R0_rect, Tr_velo_to_cam is missing or has the wrong number of values, P2's left
    3x3 is no pinhole K, or a rotation is not one."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: calibration file not found")
    found: dict[str, list[float]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise SourceError(f"{path}:{lineno}: expected 'KEY: values', got {line[:40]!r}")
        key = key.strip()
        if key in _CALIB_KEYS:
            values = _numbers(rest.split(), f"{path}:{lineno} ({key})")
            if len(values) != _CALIB_KEYS[key]:
                raise SourceError(f"{path}:{lineno}: {key} has {len(values)} values, expected {_CALIB_KEYS[key]}")
            found[key] = values
    missing = [k for k in _CALIB_KEYS if k not in found]
    if missing:
        raise SourceError(f"{path}: missing calibration entries {missing}")
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in found.items()}
    check_intrinsics(t["P2"].reshape(3, 4)[:, :3], f"{path}: P2", SourceError)  # t2 = K^-1 P2[:, 3] needs it
    check_rotation(t["R0_rect"].reshape(3, 3), f"{path}: R0_rect", SourceError)
    check_rotation(t["Tr_velo_to_cam"].reshape(3, 4)[:, :3], f"{path}: Tr_velo_to_cam", SourceError)
    return KittiCalib(t["P2"].reshape(3, 4), t["R0_rect"].reshape(3, 3), t["Tr_velo_to_cam"].reshape(3, 4))


def read_labels(path: str | os.PathLike) -> list[KittiObjectLabel]:
    """Parse a ``label_2/*.txt`` file (15 whitespace-separated fields per line; a 16th score field, as in
    result files, is accepted and ignored). Raises ``SourceError`` naming file and line for a malformed line, an
    inverted 2D box or a negative 3D dimension (other than a ``DontCare`` region's -1)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: label file not found")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) not in (15, 16):
            raise SourceError(f"{path}:{lineno}: {len(f)} fields, a KITTI label line has 15")
        v = _numbers(f[1:15], f"{path}:{lineno}")
        if v[5] < v[3] or v[6] < v[4]:
            raise SourceError(f"{path}:{lineno}: 2D box (left, top, right, bottom) {v[3:7]} is inverted")
        if f[0] != "DontCare" and min(v[7:10]) < 0:  # DontCare regions carry -1 dimensions by convention
            raise SourceError(f"{path}:{lineno}: {f[0]} has a negative dimension (height, width, length) {v[7:10]}")
        out.append(KittiObjectLabel(cls=f[0], truncated=v[0], occluded=int(v[1]), alpha=v[2], box2d=v[3:7],
                                    hwl=v[7:10], location=v[10:13], rotation_y=v[13]))
    return out


class KittiOptions(SourceOptions):
    """Options of ``kind: kitti``: the dataset ``root`` and ``split``, one output ``image_size`` (H, W
    pixels; KITTI frames differ by a few pixels), whether to read sparse Velodyne ``depth``, an
    optional list of frame ``ids``, and the fewest points a Velodyne sweep may hold (``min_lidar_points``:
    KITTI records no count to check a file cut short at a point boundary with). An ``image_size`` side under
    8 pixels raises ``ValueError``.
    """
    root: str  # the folder holding training/ (or the split folder itself)
    split: Literal["training", "testing"] = "training"
    image_size: ImageSize | None = None  # (H, W); KITTI images vary by a few pixels, shards need one size
    depth: bool = True  # sparse depth from velodyne/ or velodyne_reduced/ when present
    ids: list[str] | None = None  # frame ids (default: every image_2/*.png, sorted)
    # KITTI records no point count: a sweep with fewer points is refused as truncated (hydranet.limits)
    min_lidar_points: int = Field(MIN_LIDAR_POINTS_DEFAULT, ge=1)


@register_source("kitti")
class KittiSource(Source):
    """KITTI object frames (one camera, ``CAM2``); see the module docstring for frames and labels."""

    Options = KittiOptions
    path_option = "root"
    labels = frozenset({"objects3d", "detection2d", "depth"})
    classes = {"objects3d": _KITTI_CLASSES, "detection2d": _KITTI_CLASSES}
    default_class_map = DEFAULT_CLASS_MAP
    closed_vocabulary = True  # a published class list: a class_map key outside it is a typo
    camera_names = ("CAM2",)

    def __init__(self, options: KittiOptions, setup: Setup | None = None):
        super().__init__(options, setup)
        root = Path(options.root).expanduser()
        self.dir = root if (root / "image_2").is_dir() else root / options.split
        if not (self.dir / "image_2").is_dir():
            raise SourceError(f"{root}: no image_2/ folder (expected {root / options.split / 'image_2'})")
        self.image_size = tuple(options.image_size) if options.image_size is not None else None
        self.depth = options.depth
        self.min_lidar_points = options.min_lidar_points
        self.ids = list(options.ids) if options.ids is not None else \
            sorted(p.stem for p in (self.dir / "image_2").glob("*.png"))
        if not self.ids:
            raise SourceError(f"{self.dir / 'image_2'}: no .png images")

    @cached_property
    def setup(self) -> Setup:
        """CAM2 of the first frame (native size, K = P2[:, :3], T_ego_from_cam), the output size, no BEV grid."""
        frame = self.ids[0]
        calib = read_calib(self.dir / "calib" / f"{frame}.txt")
        path = self.dir / "image_2" / f"{frame}.png"
        with open_image(path, str(path)) as im:  # the header: no decoding, the pixel limit
            w, h = im.size
        cam = Camera(name=self.camera_names[0], image_size=(h, w), K=calib.K.tolist(),
                     T_ego_from_cam=calib.T_ego_from_cam.tolist())
        size = self.image_size if self.image_size is not None else (h, w)
        return Setup(image_size=size, rigs={"kitti": Rig(cameras=(cam,))}, grid=None, classes=self.object_classes())

    def label_present(self, index: int, label: str) -> bool:
        """Whether frame ``index`` has ``label``: ``objects3d``/``detection2d`` when its ``label_2`` file
        exists, ``depth`` when enabled and a Velodyne scan exists (files are only stat'ed).
        """
        frame = self.ids[index]
        if label == "depth":
            return self.depth and self._velodyne(frame) is not None
        return label in ("objects3d", "detection2d") and (self.dir / "label_2" / f"{frame}.txt").is_file()

    def __len__(self) -> int:
        return len(self.ids)

    def _velodyne(self, frame: str) -> Path | None:
        for sub in ("velodyne", "velodyne_reduced"):
            p = self.dir / sub / f"{frame}.bin"
            if p.is_file():
                return p
        return None

    def __getitem__(self, index: int) -> Sample:
        frame = self.ids[index]
        image, (h0, w0) = load_rgb(self.dir / "image_2" / f"{frame}.png", self.image_size)
        h, w = image.shape[-2:]
        sx, sy = w / w0, h / h0
        calib = read_calib(self.dir / "calib" / f"{frame}.txt")
        K = resize_intrinsics(calib.K, sx, sy)
        labels: dict = {}
        label_path = self.dir / "label_2" / f"{frame}.txt"
        if label_path.is_file():
            labels.update(self._objects(read_labels(label_path), calib, sx, sy))
        velo = self._velodyne(frame) if self.depth else None
        if velo is not None:
            raw = np.fromfile(velo, dtype=np.float32)
            if raw.size % 4:
                raise SourceError(f"{velo}: {raw.size} floats, not a multiple of 4 (x, y, z, reflectance)")
            check_lidar_points(raw.size // 4, str(velo), self.min_lidar_points)
            pts = torch.from_numpy(raw.reshape(-1, 4)[:, :3].astype(np.float64))
            T_cam_from_velo = calib.T_cam2_from_rect @ calib.T_rect_from_velo
            labels["depth"] = sparse_depth(transform_points(T_cam_from_velo, pts), K, (h, w))[None]
        return Sample(images=image[None], intrinsics=K.float()[None], T_ego_from_cam=calib.T_ego_from_cam.float()[None],
                      T_world_from_ego=torch.eye(4), timestamp=0.0, scene_id=f"kitti/{frame}", frame_index=0,
                      camera_names=self.camera_names, labels=labels)

    def _objects(self, objects: list[KittiObjectLabel], calib: KittiCalib, sx: float, sy: float) -> dict:
        keep, ids = [], []
        for o in objects:
            c = self.class_map(o.cls)  # counts kept / dropped per KITTI class
            if c is not None:
                keep.append(o)
                ids.append(c)
        classes = torch.tensor(ids, dtype=torch.int64)
        T = calib.T_ego_from_rect
        boxes3d = torch.zeros(len(keep), 7, dtype=torch.float64)
        for i, o in enumerate(keep):
            hh, ww, ll = o.hwl
            bottom = torch.tensor(o.location, dtype=torch.float64)
            centre = bottom - torch.tensor([0.0, hh / 2, 0.0], dtype=torch.float64)  # camera y points down
            c = transform_points(T, centre[None])[0]
            yaw = math.remainder(-o.rotation_y - math.pi / 2, 2 * math.pi)  # heading (cos ry, 0, -sin ry) in ego
            boxes3d[i] = torch.tensor([c[0], c[1], c[2], ll, ww, hh, yaw])
        boxes2d = torch.tensor([o.box2d for o in keep], dtype=torch.float32).reshape(-1, 4)
        truncated = torch.tensor([o.truncated for o in keep], dtype=torch.float32)
        occluded = torch.tensor([o.occluded for o in keep], dtype=torch.int64)
        visible = (1 - truncated.clamp(0, 1)) * torch.tensor([_OCCLUSION_VISIBLE.get(o.occluded, 0.5) for o in keep],
                                                             dtype=torch.float32)
        track = torch.arange(len(keep), dtype=torch.int64)
        return {
            "objects3d": {"boxes": boxes3d.float(), "classes": classes, "track_id": track},
            "detection2d": {"boxes": scale_boxes(boxes2d, sx, sy), "classes": classes.clone(),
                            "camera": torch.zeros(len(keep), dtype=torch.int64), "visible": visible,
                            "track_id": track.clone(), "truncated": truncated, "occluded": occluded},
        }
