"""Scenes in Rerun: every frame of a scene (and a model's predictions on it) as a Rerun recording (``.rrd``)
that perception engineers scrub through in the Rerun viewer (``rerun scene.rrd``), not in PNG grids.

Needs the optional extra ``hydranet[rerun]`` (``rerun-sdk``); without it ``require_rerun`` raises
``RerunMissing`` with the one line that installs it. Entity tree (Rerun's transforms do the geometry):

    world                                      ego frame axes of the sequence's first pose (x fwd, y left, z up)
    world/trajectory                           the ego's path so far (LineStrips3D, world frame)
    world/ego                                  Transform3D: T_world_from_ego of the frame
    world/ego/{truth,prediction}/boxes3d       3D boxes (Boxes3D, ego frame), class ids, labels
    world/ego/truth/{lane_lines,ego_path}      lane lines, the planned path (LineStrips3D, ego frame)
    world/ego/{truth,prediction}/points        depth as 3D points (lidar returns or a subsampled depth map)
    world/ego/cam/<name>                       Transform3D: T_ego_from_cam; Pinhole: K, image size, OpenCV axes
    world/ego/cam/<name>/image                 the camera image, and under it per side (truth, prediction):
        .../{side}/boxes2d, .../{side}/lights  2D boxes (class ids), traffic lights (state colours)
        .../{side}/drivable, .../{side}/lanes  SegmentationImage (class ids, annotated)
        .../{side}/depth                       DepthImage (metres)
    bev/{truth,prediction}/semantic            the BEV map (one colour per class; ``BevGrid`` layout)

Timelines: ``frame`` (the index in the recording) and ``time`` (the sample's timestamp, seconds).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from hydranet.data import BEV_CLASSES, LANE_KINDS, LIGHT_STATES, Sample
from hydranet.setup import Setup, class_names
from hydranet.viz.style import (
    BEV_COLORS,
    DRIVABLE_COLOR,
    EGO_PATH_COLOR,
    LANE_COLORS,
    LIGHT_COLORS,
    class_color,
    lane_color,
)

INSTALL_HINT = "pip install 'hydranet[rerun]' (in a source checkout: .venv/bin/pip install -e '.[rerun]')"
_SIDES = ("truth", "prediction")
_MAX_POINTS = 20000  # depth points per frame and side: the viewer stays fluid


class RerunMissing(ImportError):
    """rerun-sdk is not installed; the message is the one line that installs it."""


def require_rerun() -> Any:
    """The ``rerun`` module, or ``RerunMissing`` saying how to install the extra."""
    try:
        import rerun
    except ImportError:
        raise RerunMissing(f"hydranet view writes Rerun recordings and needs rerun-sdk: {INSTALL_HINT}") from None
    return rerun


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _rgb(color: tuple[int, int, int]) -> list[int]:
    return [int(c) for c in color]


class SceneRecorder:
    """Writes frames to ``path`` (``.rrd``) as a Rerun recording (module docstring). Use as a context manager;
    ``log_frame`` once per frame in time order. The recording is written to a temporary file beside ``path`` and
    renamed over it when the block ends without an error (removed otherwise): a failed run leaves no partial
    recording under the output's name.

    ``setup``: the setup of the frames (their class vocabularies name the truth's class ids: nuScenes' ten, the
    world's five, ...); ``model_setup``: the predicting model's (its vocabularies name the predictions' ids;
    default ``setup``). None: the world's classes (``setup.class_names``)."""

    def __init__(self, path: str | Path, application_id: str = "hydranet", setup: Setup | None = None,
                 model_setup: Setup | None = None) -> None:
        self.rr = require_rerun()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}")
        self.rec = self.rr.new_recording(application_id)
        self.rec.save(str(self._tmp))
        sides = {"truth": setup, "prediction": model_setup or setup}
        # Class names per side and box label: a recording may show a nuScenes frame's truth beside a model's boxes.
        self._classes = {(side, label): class_names(s, label) for side, s in sides.items()
                         for label in ("objects3d", "detection2d")}
        # their annotation contexts (class id -> label and colour), logged once on each box entity
        self._object_infos = {key: [self.rr.AnnotationInfo(id=i, label=name, color=_rgb(class_color(name)))
                                    for i, name in enumerate(names)] for key, names in self._classes.items()}
        self._trajectory: list[list[float]] = []
        self._origin: np.ndarray | None = None  # T_ego0_from_world: the first pose is the recording's origin
        self._annotated: set[str] = set()  # entities whose class annotations are logged
        self._log_static()

    def __enter__(self) -> SceneRecorder:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(keep=exc_type is None)

    def close(self, keep: bool = True) -> None:
        """Flush everything and move the recording to ``path`` (``keep``), or delete it (``keep=False``)."""
        self.rec.flush(blocking=True)
        self.rec.disconnect()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    # ---- static: axes and class annotations ------------------------------------------------------
    def _annotate(self, path: str, infos: list[Any]) -> None:
        """Log ``infos`` (class id -> label and colour) as the annotation context of entity ``path``, once."""
        if path not in self._annotated:
            self._annotated.add(path)
            self.rec.log(path, self.rr.AnnotationContext(infos), static=True)

    def _log_static(self) -> None:
        rr = self.rr
        self.rec.log("world", rr.ViewCoordinates.FLU, static=True)  # ego convention: x forward, y left, z up
        regions = [rr.AnnotationInfo(id=0, label="background", color=[0, 0, 0, 0]),
                   rr.AnnotationInfo(id=1, label="drivable", color=_rgb(DRIVABLE_COLOR))]
        lanes = [rr.AnnotationInfo(id=0, label="none", color=[0, 0, 0, 0]),
                 *(rr.AnnotationInfo(id=k, label=LANE_KINDS[k], color=_rgb(c)) for k, c in LANE_COLORS.items())]
        self._regions, self._lanes = regions, lanes  # logged with each segmentation entity (they are per path)

    # ---- per frame ----------------------------------------------------------------------------
    def log_frame(self, index: int, sample: Sample, truth: dict[str, Any] | None = None,
                  prediction: dict[str, Any] | None = None) -> None:
        """Log frame ``index`` of the recording: ``sample``'s cameras (images, K, T_ego_from_cam), its ego pose,
        and per side the task outputs given (``truth``: labels in ``Sample.labels`` form, default the sample's;
        ``prediction``: each task's decoded output for this frame, e.g. ``Task.decode(...)[0]``)."""
        rr, rec = self.rr, self.rec
        rec.set_time_sequence("frame", index)
        rec.set_time_seconds("time", float(sample.timestamp))
        T = _np(sample.T_world_from_ego).astype(np.float64)
        if self._origin is None:
            self._origin = np.linalg.inv(T)
        T = self._origin @ T  # poses relative to the first frame: small numbers, the scene starts at the origin
        rec.log("world/ego", rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]))
        self._trajectory.append(T[:3, 3].tolist())
        if len(self._trajectory) > 1:
            rec.log("world/trajectory", rr.LineStrips3D([self._trajectory], colors=[_rgb(EGO_PATH_COLOR)]))
        h, w = int(sample.images.shape[-2]), int(sample.images.shape[-1])
        for i, name in enumerate(sample.camera_names):
            cam = f"world/ego/cam/{name}"
            Tc = _np(sample.T_ego_from_cam[i]).astype(np.float64)
            rec.log(cam, rr.Transform3D(translation=Tc[:3, 3], mat3x3=Tc[:3, :3]))
            rec.log(cam, rr.Pinhole(image_from_camera=_np(sample.intrinsics[i]), resolution=[w, h],
                                    camera_xyz=rr.ViewCoordinates.RDF))
            rec.log(f"{cam}/image", rr.Image(_np(sample.images[i]).transpose(1, 2, 0).astype(np.uint8)))
        sides = {"truth": sample.labels if truth is None else truth, "prediction": prediction or {}}
        for side, outputs in sides.items():
            self._log_outputs(side, outputs, sample)

    def _log_outputs(self, side: str, out: dict[str, Any], sample: Sample) -> None:
        rr, rec = self.rr, self.rec
        names = sample.camera_names
        for task, value in out.items():
            if value is None:
                continue
            if task == "objects3d":
                self._boxes3d(side, value)
            elif task == "detection2d":
                self._boxes2d(side, names, value, "boxes2d", self._classes[(side, "detection2d")])
            elif task == "traffic_light":
                self._boxes2d(side, names, value, "lights", LIGHT_STATES)
            elif task in ("drivable", "lanes"):
                masks = _np(value)
                masks = (masks > 0.5).astype(np.uint8) if task == "drivable" and masks.dtype != np.uint8 else masks
                for i, name in enumerate(names):
                    path = f"world/ego/cam/{name}/image/{side}/{task}"
                    self._annotate(path, self._regions if task == "drivable" else self._lanes)
                    rec.log(path, rr.SegmentationImage(masks[i].astype(np.uint8)))
            elif task == "depth":
                depth = _np(value).astype(np.float32)
                for i, name in enumerate(names):
                    rec.log(f"world/ego/cam/{name}/image/{side}/depth", rr.DepthImage(depth[i], meter=1.0))
                self._points(f"world/ego/{side}/points", depth, sample)
            elif task == "bev_semantic":
                rec.log(f"bev/{side}/semantic", rr.Image(self._bev_rgb(_np(value))))
            elif task == "lane_lines":
                pts = _np(value["points"])
                cols = [_rgb(lane_color(k)) for k in _np(value["kind"]).tolist()]
                rec.log(f"world/ego/{side}/lane_lines", rr.LineStrips3D(list(pts), colors=cols))
            elif task == "ego_path":
                path = _np(value)
                line = np.concatenate([np.zeros((1, 3)), np.c_[path[:, :2], np.zeros(len(path))]])
                rec.log(f"world/ego/{side}/ego_path", rr.LineStrips3D([line], colors=[_rgb(EGO_PATH_COLOR)]))

    def _boxes3d(self, side: str, value: dict[str, Any]) -> None:
        rr = self.rr
        path = f"world/ego/{side}/boxes3d"
        vocabulary = self._classes[(side, "objects3d")]
        self._annotate(path, self._object_infos[(side, "objects3d")])
        boxes = _np(value["boxes"]).reshape(-1, 7)
        classes = [int(c) for c in _np(value["classes"]).tolist()]
        scores = _np(value["scores"]).tolist() if value.get("scores") is not None else None
        labels = [vocabulary[c] + (f" {scores[k]:.2f}" if scores else "") for k, c in enumerate(classes)]
        self.rec.log(path, rr.Boxes3D(centers=boxes[:, :3], sizes=boxes[:, 3:6],
                                      rotation_axis_angles=[rr.RotationAxisAngle(axis=[0, 0, 1], radians=float(y))
                                                            for y in boxes[:, 6]],
                                      class_ids=classes, labels=labels))

    def _boxes2d(self, side: str, names: tuple[str, ...], value: dict[str, Any], what: str,
                 vocabulary: tuple[str, ...]) -> None:
        rr = self.rr
        boxes = _np(value["boxes"]).reshape(-1, 4)
        cams = _np(value["camera"]).astype(int)
        ids = _np(value["state"] if what == "lights" else value["classes"]).astype(int)
        scores = _np(value["scores"]) if value.get("scores") is not None else None
        for i, name in enumerate(names):
            path = f"world/ego/cam/{name}/image/{side}/{what}"
            if what != "lights":
                self._annotate(path, self._object_infos[(side, "detection2d")])
            keep = cams == i
            labels = [vocabulary[c] + (f" {s:.2f}" if scores is not None else "")
                      for c, s in zip(ids[keep], scores[keep] if scores is not None else ids[keep], strict=True)]
            kw: dict[str, Any] = {"array": boxes[keep], "array_format": rr.Box2DFormat.XYXY, "labels": labels}
            if what == "lights":
                kw["colors"] = [_rgb(LIGHT_COLORS[LIGHT_STATES[c]]) for c in ids[keep]]
            else:
                kw["class_ids"] = ids[keep].tolist()
            self.rec.log(path, rr.Boxes2D(**kw))

    def _points(self, path: str, depth: np.ndarray, sample: Sample) -> None:
        """Depth maps ``[N, H, W]`` (metres, 0 = none) unprojected into ego-frame points, coloured by camera."""
        pts = []
        for i in range(depth.shape[0]):
            v, u = np.nonzero(depth[i] > 0)
            if len(v) == 0:
                continue
            step = max(1, math.ceil(len(v) * depth.shape[0] / _MAX_POINTS))
            v, u = v[::step], u[::step]
            z = depth[i, v, u]
            K = _np(sample.intrinsics[i])
            cam = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
            T = _np(sample.T_ego_from_cam[i])
            pts.append(cam @ T[:3, :3].T + T[:3, 3])
        if pts:
            self.rec.log(path, self.rr.Points3D(np.concatenate(pts), radii=0.05))

    def _bev_rgb(self, bev: np.ndarray) -> np.ndarray:
        """A BEV map ``[C, R, C']`` as an RGB image, later classes over earlier ones, forward up."""
        img = np.full((*bev.shape[1:], 3), 24, np.uint8)
        for c, name in enumerate(BEV_CLASSES[: bev.shape[0]]):
            img[bev[c] > 0.5] = BEV_COLORS.get(name, (255, 255, 255))
        return img


def decoded_cpu(x: Any) -> Any:
    """A decoded output with tensors on the CPU (dicts of tensors too)."""
    if isinstance(x, Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: decoded_cpu(v) for k, v in x.items()}
    return x

