"""``nuscenes``: every keyframe of a nuScenes release as a 6-camera ``Sample``, through nuscenes-devkit.

Follows the devkit (``NuScenes`` tables, ``create_splits_scenes`` splits, ``box_velocity``,
``view_points``, ``LidarPointCloud``) and the frame conventions of its detection evaluation:

- **Ego frame** of a sample = the ego pose at its ``LIDAR_TOP`` keyframe timestamp, *levelled*: its
  yaw and position, with the car body's small roll and pitch left out, so z is up (gravity) as the
  ego frame's convention says and nuScenes' boxes — upright in the global frame, rotated about z only —
  are upright in it too (a 7-number box loses nothing). ``T_world_from_ego`` is that levelled pose. Each
  camera's ``T_ego_from_cam`` = ``inv(T_world_from_ego) @ T_world_from_ego_cam @
  T_ego_from_cam(calibrated_sensor)``: full rotation, and the ego motion between the camera's own
  exposure and the lidar instant, so a box corner projects exactly where the devkit's
  ``get_sample_data`` + ``view_points`` put it (``tests/data/test_converter_geometry.py``).
- **Cameras** (OpenCV, as nuScenes): ``CAM_FRONT, CAM_FRONT_LEFT, CAM_FRONT_RIGHT, CAM_BACK_LEFT,
  CAM_BACK_RIGHT, CAM_BACK`` by default; K from ``calibrated_sensor.camera_intrinsic``, rescaled
  when ``image_size`` resizes the 1600×900 images.
- **Timestamps**: seconds since the scene's first keyframe (``scene_id`` = scene name).

Labels (model vocabulary ``model_classes``, by default nuScenes' own ten detection classes, reached
through the devkit's ``category_to_detection_name`` and ``class_map``; ``model_classes: world`` maps
them onto the world's five: bus, trailer and construction vehicle to truck, traffic cone to cone;
categories outside the ten and unmapped classes are dropped and counted in ``class_map.dropped``):

- ``objects3d``: annotation boxes in the ego frame (l, w, h from nuScenes' w, l, h), velocity from
  ``box_velocity`` rotated into the ego frame (NaN where the devkit cannot compute it: a lone
  keyframe), ``track_id`` from the instance token. Boxes with no lidar and no radar point are
  removed, as the devkit's detection eval does (``filter_empty``).
- ``detection2d``: the kept boxes' 8 corners projected (``view_points``) into each camera, corners
  behind the camera dropped, the hull clipped to the image; ``visible`` from the annotation's
  visibility level (v0-40 → 0.2, v40-60 → 0.5, v60-80 → 0.7, v80-100 → 0.9; an empty token → 1.0).
- ``depth`` (sparse): ``LIDAR_TOP`` points moved into each camera (lidar → ego at the lidar instant
  → camera) and z-buffered at the output resolution; 0 = no point (a validity mask: depth > 0).
  The depth task's loss and ``DepthMetric`` score only pixels with depth > 0.
- ``bev_semantic``: vehicle (cars, trucks, buses, trailers, construction vehicles, two-wheelers),
  pedestrian and cone occupancy rasterised from the kept boxes on the grid of the model setup the source is
  opened for (``Source.model_setup.grid``: training passes the model's, ``hydranet convert --config`` the
  config's; default ``Setup()``'s); ``bev_semantic_known`` marks those channels, so drivable/lanes/sidewalk
  (no map) are absent, not "empty".
- ``ego_path``: future ego poses (x, y, yaw in the current ego frame) interpolated from the
  LIDAR_TOP ego poses at ``ego_path_rate_hz`` over ``ego_path_seconds``; absent when the log does
  not reach that far.

Missing images, lidar files, tables or tokens raise ``SourceError`` naming the file or token; so does a
lidar file holding fewer points in the keyframe's boxes than ``sample_annotation.num_lidar_pts`` records
(a file cut short, even at a point boundary).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from hydranet.data.sample import Sample
from hydranet.data.sources.base import Source, SourceError, SourceOptions, register_source
from hydranet.data.sources.nuscenes_labels import (
    future_ego_path,
    level,
    lidar_depth,
    pose_matrix,
    project_boxes2d,
    rasterise_bev,
    track_id,
)
from hydranet.geometry import check_intrinsics
from hydranet.limits import MIN_LIDAR_POINTS_DEFAULT, check_lidar_points, open_image
from hydranet.setup import NUSCENES_CLASSES, Camera, ImageSize, Rig, Setup

CAMERAS: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT",
                            "CAM_BACK")
_DETECTION_CLASSES: tuple[str, ...] = NUSCENES_CLASSES  # the devkit's ten, the default model vocabulary
# nuScenes detection class -> a class of a model vocabulary without it (the world's five): buses, trailers
# and construction vehicles are large vehicles ("truck"), cones "cone". A class whose own name is in the
# model vocabulary keeps it; two-wheelers and barriers have no world class: dropped and counted there.
DEFAULT_CLASS_MAP: dict[str, str | None] = {
    "car": "car", "truck": "truck", "bus": "truck", "trailer": "truck", "construction_vehicle": "truck",
    "pedestrian": "pedestrian", "traffic_cone": "cone", "motorcycle": None, "bicycle": None, "barrier": None,
}
_VISIBILITY: dict[str, float] = {"1": 0.2, "2": 0.5, "3": 0.7, "4": 0.9, "": 1.0}

# The ``skipped`` reason of a box ``filter_empty`` removes.
_EMPTY_BOXES = "boxes without a lidar or radar point (filter_empty)"


class NuScenesOptions(SourceOptions):
    """Options of the ``nuscenes`` source (``kind: nuscenes`` in a dataset config, or ``nuscenes:DATAROOT``).

    ``dataroot`` holds ``<version>/*.json`` and the ``samples/``/``sweeps/`` files; ``split`` is a devkit
    ``create_splits_scenes`` split; ``image_size`` (H, W) resizes images and K; ``min_lidar_depth`` in metres;
    ``ego_path_seconds``/``ego_path_rate_hz`` set the ``ego_path`` horizon. The grid of ``bev_semantic`` is the
    model setup's, not an option (module docstring). Bad values raise pydantic's ``ValidationError`` naming the
    field.
    """

    dataroot: str
    version: str = "v1.0-mini"  # table folder under dataroot (v1.0-mini, v1.0-trainval, v1.0-test)
    split: str | None = None  # a create_splits_scenes() split (mini_train, val, ...); None = every scene
    cameras: list[str] = Field(default_factory=lambda: list(CAMERAS), min_length=1)  # camera channels, in rig order
    image_size: ImageSize | None = None  # (H, W) output size; None = as stored (900, 1600)
    filter_empty: bool = True  # drop boxes with no lidar and no radar point (devkit detection eval)
    min_lidar_depth: float = Field(1.0, gt=0)  # metres; the devkit's map_pointcloud_to_image min_dist
    # the fewest points of a sweep whose sample's boxes count none (sample_annotation.num_lidar_pts), see _depth
    min_lidar_points: int = Field(MIN_LIDAR_POINTS_DEFAULT, ge=1)
    ego_path_seconds: float = Field(3.0, gt=0)  # ego_path horizon, s
    ego_path_rate_hz: float = Field(10.0, gt=0)  # ego_path waypoints per second
    labels: list[str] | None = None  # produce only these labels (None = all)


@register_source("nuscenes")
class NuScenesSource(Source):
    """Every keyframe of a nuScenes release, in scene order, as a ``Sample`` (see the module docstring for
    frames and labels). Raises ``SourceError`` naming the table, file or token that is missing or bad."""

    Options = NuScenesOptions
    path_option = "dataroot"
    labels = frozenset({"objects3d", "detection2d", "depth", "bev_semantic", "bev_semantic_known", "ego_path"})
    classes = {"objects3d": _DETECTION_CLASSES, "detection2d": _DETECTION_CLASSES}
    default_class_map = DEFAULT_CLASS_MAP
    closed_vocabulary = True
    default_vocabulary = NUSCENES_CLASSES

    def __init__(self, options: NuScenesOptions, setup: Setup | None = None):
        super().__init__(options, setup)
        self.opt = options
        self.root = Path(options.dataroot)
        self.camera_names = tuple(options.cameras)
        self.want = frozenset(options.labels) if options.labels is not None else self.labels
        unknown = sorted(self.want - self.labels)
        if unknown:
            raise SourceError(f"nuscenes.labels: {unknown} cannot be produced (this source makes "
                              f"{sorted(self.labels)})")
        if "bev_semantic" in self.want and self.model_setup.grid is None:
            raise SourceError("nuscenes: bev_semantic is rasterised on the BEV grid of the setup the source is opened "
                              "for, and that setup has none (setup.grid); give one, or leave bev_semantic out of "
                              "nuscenes.labels")
        self.nusc = self._load()
        self.keyframes = self._index()

    # -- tables and index ----------------------------------------------------------------------

    def _load(self) -> Any:
        from nuscenes.nuscenes import NuScenes

        tables = self.root / self.opt.version
        if not tables.is_dir():
            raise SourceError(f"nuScenes tables not found: {tables} (dataroot={self.root}, version={self.opt.version})")
        for name in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
                     "log", "scene", "sample", "sample_data", "sample_annotation", "map"):
            if not (tables / f"{name}.json").is_file():
                raise SourceError(f"nuScenes table missing: {tables / f'{name}.json'}")
        try:
            return NuScenes(version=self.opt.version, dataroot=str(self.root), verbose=False)
        except (AssertionError, FileNotFoundError, KeyError, ValueError) as e:
            raise SourceError(f"nuscenes-devkit cannot load {tables}: {type(e).__name__}: {e}") from e

    def _get(self, table: str, token: str) -> dict[str, Any]:
        try:
            return self.nusc.get(table, token)
        except KeyError:
            raise SourceError(f"nuScenes {table} token '{token}' not found in {self.root / self.opt.version}") from None

    @staticmethod
    def _numbers(value: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
        """``value`` as a finite float64 array of ``shape``; ``SourceError`` naming ``where`` otherwise (a table
        edited by hand or written by another tool)."""
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise SourceError(f"{where}: expected {shape} numbers, got {value!r}") from None
        if a.shape != shape or not np.isfinite(a).all():
            raise SourceError(f"{where}: expected {shape} finite numbers, got {value!r}")
        return a

    def _index(self) -> list[tuple[str, int, str, float]]:
        """(scene name, frame index, sample token, scene start in µs) of every keyframe, in scene order."""
        scenes = self.nusc.scene
        if self.opt.split is not None:
            from nuscenes.utils.splits import create_splits_scenes

            splits = create_splits_scenes()
            if self.opt.split not in splits:
                raise SourceError(f"nuscenes.split: unknown split '{self.opt.split}'; devkit splits: {sorted(splits)}")
            names = set(splits[self.opt.split])
            scenes = [s for s in scenes if s["name"] in names]
            if not scenes:
                raise SourceError(f"nuscenes.split '{self.opt.split}': none of its scenes is in "
                                  f"{self.root / self.opt.version}")
        out = []
        for scene in scenes:
            token, k, start = scene["first_sample_token"], 0, None
            while token:
                sample = self._get("sample", token)
                start = sample["timestamp"] if start is None else start
                out.append((scene["name"], k, token, start))
                token, k = sample["next"], k + 1
        if not out:
            raise SourceError(f"no keyframes in {self.root / self.opt.version}")
        return out

    def __len__(self) -> int:
        return len(self.keyframes)

    def label_present(self, index: int, label: str) -> bool:
        """Whether keyframe ``index`` has ``label``: every requested label is, except ``ego_path`` near the end
        of a log (the horizon runs past the last LIDAR_TOP pose)."""
        if label not in self.want:
            return False
        if label == "ego_path":
            return self._ego_path(self._lidar(index)) is not None
        return True

    @cached_property
    def setup(self) -> Setup:
        """The rig of the first keyframe (each camera's native size and K, T_ego_from_cam in its levelled ego
        frame), the output image size, the grid of ``bev_semantic`` when it is produced (``model_setup.grid``), and
        ``model_classes``."""
        token = self.keyframes[0][2]
        sample = self._get("sample", token)
        T_ego_from_world = np.linalg.inv(self._ego_pose(self._lidar(0)))
        cams, sizes = [], set()
        for cam in self.camera_names:
            sd, cs, T = self._camera(token, sample, cam, T_ego_from_world)
            K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
            w, h = sd.get("width") or 0, sd.get("height") or 0
            if not (w and h):  # older tables lack the size: the image header has it (no decoding)
                path = self.root / sd["filename"]
                with open_image(path, str(path)) as im:  # the pixel limit
                    w, h = im.size
            sizes.add((h, w))
            cams.append(Camera(name=cam, image_size=(h, w), K=K.tolist(), T_ego_from_cam=T.tolist()))
        size = tuple(self.opt.image_size) if self.opt.image_size is not None else next(iter(sizes))
        return Setup(image_size=size, rigs={"nuscenes": Rig(cameras=tuple(cams))},
                     grid=self.model_setup.grid if "bev_semantic" in self.want else None,
                     classes=self.object_classes())

    def _ego_pose(self, sd_lidar: dict[str, Any]) -> np.ndarray:
        """``T_world_from_ego`` of a keyframe: the LIDAR_TOP ego pose levelled (yaw and position only)."""
        ep = self._get("ego_pose", sd_lidar["ego_pose_token"])
        return level(pose_matrix(ep["translation"], ep["rotation"]))

    def _camera(self, token: str, sample: dict[str, Any], cam: str,
                T_ego_from_world: np.ndarray) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
        """(sample_data, calibrated_sensor, T_ego_from_cam [4, 4]) of camera ``cam`` in the keyframe's ego frame."""
        if cam not in sample["data"]:
            raise SourceError(f"sample {token}: no {cam} sample_data (has {sorted(sample['data'])})")
        sd = self._get("sample_data", sample["data"][cam])
        cs = self._get("calibrated_sensor", sd["calibrated_sensor_token"])
        where = f"{self.root / self.opt.version / 'calibrated_sensor.json'}: token {cs.get('token')} ({cam})"
        K = self._numbers(cs.get("camera_intrinsic"), (3, 3), f"{where}: camera_intrinsic")
        check_intrinsics(torch.from_numpy(K), f"{where}: camera_intrinsic", SourceError)
        ep_cam = self._get("ego_pose", sd["ego_pose_token"])
        T = (T_ego_from_world @ pose_matrix(ep_cam["translation"], ep_cam["rotation"])
             @ pose_matrix(cs["translation"], cs["rotation"]))
        return sd, cs, T

    # -- one keyframe ----------------------------------------------------------------------------

    def _lidar(self, index: int) -> dict[str, Any]:
        return self._get("sample_data", self._get("sample", self.keyframes[index][2])["data"]["LIDAR_TOP"])

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} nuScenes keyframes")
        scene, frame, token, start = self.keyframes[index]
        sample = self._get("sample", token)
        sd_lidar = self._lidar(index)
        T_world_from_ego = self._ego_pose(sd_lidar)
        T_ego_from_world = np.linalg.inv(T_world_from_ego)
        images, Ks, Ts, sizes = [], [], [], []
        for cam in self.camera_names:
            sd, cs, T = self._camera(token, sample, cam, T_ego_from_world)
            img, K = self._image(sd, np.asarray(cs["camera_intrinsic"], dtype=np.float64))
            images.append(img)
            Ks.append(K)
            Ts.append(T)
            sizes.append(img.shape[:2])
        if len(set(sizes)) != 1:
            raise SourceError(f"sample {token}: cameras have different image sizes {sizes}; set image_size")
        h, w = sizes[0]
        K = np.stack(Ks)
        T_ego_from_cam = np.stack(Ts)
        labels: dict[str, Any] = {}
        boxes = self._boxes(sample, T_ego_from_world)
        if "objects3d" in self.want:
            labels["objects3d"] = {k: boxes[k] for k in ("boxes", "velocity", "classes", "track_id")}
        if "detection2d" in self.want:
            labels["detection2d"] = project_boxes2d(boxes, K, T_ego_from_cam, (h, w))
        if "depth" in self.want:
            labels["depth"] = self._depth(sd_lidar, K, T_ego_from_world, T_ego_from_cam, (h, w))
        if "bev_semantic" in self.want:
            grid = self.model_setup.grid
            assert grid is not None  # checked in __init__
            labels["bev_semantic"], labels["bev_semantic_known"] = rasterise_bev(boxes, grid, self.model_classes)
        if "ego_path" in self.want:
            path = self._ego_path(sd_lidar)
            if path is not None:
                labels["ego_path"] = path
        return Sample(images=torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy()),
                      intrinsics=torch.from_numpy(K).float(), T_ego_from_cam=torch.from_numpy(T_ego_from_cam).float(),
                      T_world_from_ego=torch.from_numpy(T_world_from_ego).float(),
                      timestamp=(sample["timestamp"] - start) / 1e6, scene_id=scene, camera_names=self.camera_names,
                      frame_index=frame, labels=labels)

    def _image(self, sd: dict[str, Any], K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / sd["filename"]
        if not path.is_file():
            raise SourceError(f"camera image missing: {path} (sample_data {sd['token']})")
        try:
            with open_image(path, str(path)) as im:
                im = im.convert("RGB")
                w0, h0 = im.size
                if self.opt.image_size is not None and (h0, w0) != tuple(self.opt.image_size):
                    h, w = self.opt.image_size
                    im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
                    K = np.diag([w / w0, h / h0, 1.0]) @ K
                return np.asarray(im), K
        except OSError as e:
            raise SourceError(f"cannot decode camera image {path}: {e}") from e

    def _boxes(self, sample: dict[str, Any], T_ego_from_world: np.ndarray) -> dict[str, torch.Tensor]:
        from nuscenes.eval.detection.utils import category_to_detection_name

        R = T_ego_from_world[:3, :3]
        rows, vel, cls, tid, vis = [], [], [], [], []
        for ann_token in sample["anns"]:
            ann = self._get("sample_annotation", ann_token)
            # Every annotation is checked, also one dropped below: the lidar check reads them all.
            where = f"{self.root / self.opt.version / 'sample_annotation.json'}: token {ann_token}"
            translation = self._numbers(ann.get("translation"), (3,), f"{where}: translation")
            rotation = self._numbers(ann.get("rotation"), (4,), f"{where}: rotation")
            w, l, h = self._numbers(ann.get("size"), (3,), f"{where}: size")
            if np.linalg.norm(rotation) < 1e-6:
                raise SourceError(f"{where}: rotation {ann['rotation']} is no quaternion (zero norm)")
            if min(w, l, h) < 0:
                raise SourceError(f"{where}: size {ann['size']} holds a negative extent")
            if self.opt.filter_empty and ann.get("num_lidar_pts", 1) + ann.get("num_radar_pts", 0) == 0:
                self.skipped[_EMPTY_BOXES] = self.skipped.get(_EMPTY_BOXES, 0) + 1
                continue
            name = category_to_detection_name(ann["category_name"]) or ann["category_name"]
            c = self.class_map(name)
            if c is None:
                continue
            T_box = T_ego_from_world @ pose_matrix(translation, rotation)
            yaw = float(np.arctan2(T_box[1, 0], T_box[0, 0]))
            rows.append([*T_box[:3, 3], l, w, h, yaw])
            v = self.nusc.box_velocity(ann_token)  # global frame m/s; NaN when not computable
            vel.append((R @ np.nan_to_num(v, nan=0.0))[:2] if np.isfinite(v).all() else [np.nan, np.nan])
            cls.append(c)
            tid.append(track_id(ann["instance_token"]))
            vis.append(_VISIBILITY.get(ann.get("visibility_token", ""), 1.0))
        return {"boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 7),
                "velocity": torch.tensor(np.asarray(vel, dtype=np.float32).reshape(-1, 2)),
                "classes": torch.tensor(cls, dtype=torch.int64), "track_id": torch.tensor(tid, dtype=torch.int64),
                "visible": torch.tensor(vis, dtype=torch.float32)}

    def _depth(self, sd_lidar: dict[str, Any], K: np.ndarray, T_ego_from_world: np.ndarray, T_ego_from_cam: np.ndarray,
               hw: tuple[int, int]) -> torch.Tensor:
        from nuscenes.utils.data_classes import LidarPointCloud

        path = self.root / sd_lidar["filename"]
        if not path.is_file():
            raise SourceError(f"lidar file missing: {path} (sample_data {sd_lidar['token']})")
        try:
            pc = LidarPointCloud.from_file(str(path))
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read lidar file {path}: {e}") from e
        cs = self._get("calibrated_sensor", sd_lidar["calibrated_sensor_token"])
        ep = self._get("ego_pose", sd_lidar["ego_pose_token"])
        self._check_point_count(path, sd_lidar, pc.points[:3], cs, ep)
        # lidar -> car body at the lidar instant -> world -> the levelled ego frame
        T_ego_from_lidar = (T_ego_from_world @ pose_matrix(ep["translation"], ep["rotation"])
                            @ pose_matrix(cs["translation"], cs["rotation"]))
        pts = T_ego_from_lidar[:3, :3] @ pc.points[:3] + T_ego_from_lidar[:3, 3:4]
        return lidar_depth(pts, K, T_ego_from_cam, hw, self.opt.min_lidar_depth)

    def _check_point_count(self, path: Path, sd_lidar: dict[str, Any], points: np.ndarray, cs: dict[str, Any],
                           ep: dict[str, Any]) -> None:
        """Refuse a lidar file cut short, even exactly at a point boundary (it still parses): every box of the
        keyframe records how many of this sweep's points it holds (``sample_annotation.num_lidar_pts``, counted
        by the devkit's ``points_in_box``); the file must hold them, less 0.5 % for points on a box face (the real
        scene-0061 keyframe matches its 999 exactly). A sample whose boxes count no point is held to
        ``min_lidar_points`` instead.
        ``points``: float ``[3, P]`` in the lidar frame. Raises ``SourceError`` / ``LimitError`` naming the file."""
        from nuscenes.utils.data_classes import Box
        from nuscenes.utils.geometry_utils import points_in_box
        from pyquaternion import Quaternion

        annotated = found = 0
        for token in self._get("sample", sd_lidar["sample_token"])["anns"]:
            ann = self._get("sample_annotation", token)
            n = int(ann.get("num_lidar_pts") or 0)
            if n <= 0:
                continue
            box = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))  # global -> lidar, as the devkit
            box.translate(-np.asarray(ep["translation"]))
            box.rotate(Quaternion(ep["rotation"]).inverse)
            box.translate(-np.asarray(cs["translation"]))
            box.rotate(Quaternion(cs["rotation"]).inverse)
            near = np.abs(points - box.center[:, None]).max(0) <= np.linalg.norm(box.wlh)  # cheap pre-filter
            annotated += n
            found += min(n, int(points_in_box(box, points[:, near]).sum()))
        if not annotated:
            check_lidar_points(points.shape[1], str(path), self.opt.min_lidar_points)
        elif found < annotated - annotated // 200:
            raise SourceError(f"{path}: truncated or not this keyframe's sweep: its {points.shape[1]:,} points put "
                              f"{found:,} in the boxes of sample {sd_lidar['sample_token']}, whose "
                              f"sample_annotation.num_lidar_pts count {annotated:,}")

    @cached_property
    def _lidar_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Scene token -> (timestamps µs, ego poses [T, 4, 4]) of every LIDAR_TOP sample_data (sweeps too)."""
        by_scene: dict[str, list[tuple[int, np.ndarray]]] = {}
        for sd in self.nusc.sample_data:
            if sd.get("channel") != "LIDAR_TOP":  # the devkit's reverse index adds channel
                continue
            scene = self.nusc.get("sample", sd["sample_token"])["scene_token"]
            ep = self.nusc.get("ego_pose", sd["ego_pose_token"])
            by_scene.setdefault(scene, []).append((sd["timestamp"], pose_matrix(ep["translation"], ep["rotation"])))
        out = {}
        for scene, rows in by_scene.items():
            rows.sort(key=lambda r: r[0])
            out[scene] = (np.array([r[0] for r in rows], dtype=np.float64), np.stack([r[1] for r in rows]))
        return out

    def _ego_path(self, sd_lidar: dict[str, Any]) -> torch.Tensor | None:
        scene = self._get("sample", sd_lidar["sample_token"])["scene_token"]
        times, poses = self._lidar_poses.get(scene, (np.zeros(0), np.zeros((0, 4, 4))))
        return future_ego_path(times, poses, self._ego_pose(sd_lidar), sd_lidar["timestamp"],
                               self.opt.ego_path_seconds, self.opt.ego_path_rate_hz)
