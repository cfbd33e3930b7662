"""``frames``: a user's own rig and fleet data as hydranet ``Sample``s, from one JSON line per frame.

The layout (documented for users in ``docs/own-rig.md``)::

    FRAMES.jsonl                 one JSON object per line (blank lines and lines starting with # are skipped)
    images/..., masks/..., ...   files the lines point to, relative to FRAMES.jsonl's folder (or absolute)

One line::

    {"scene_id": "drive-0001", "frame_index": 0, "timestamp": 1700000000.05,
     "T_world_from_ego": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]],
     "cameras": {"front": {"image": "images/front/000000.jpg",
                           "K": [[1000,0,640],[0,1000,360],[0,0,1]],
                           "T_ego_from_cam": [[0,0,1,1.5],[-1,0,0,0],[0,-1,0,1.4],[0,0,0,1]]}},
     "labels": {"detection2d": {"boxes": [[100,200,180,260]], "classes": ["car"], "camera": ["front"]},
                "objects3d": {"boxes": [[12.0,-1.5,0.8,4.5,1.9,1.6,0.05]], "classes": ["car"]},
                "drivable": {"front": "masks/front/000000.png"}}}

Frames: ``T_ego_from_cam`` maps OpenCV camera coordinates (x right, y down, z forward) into the ego
frame (x forward, y left, z up, origin on the ground under the rear axle); ``T_world_from_ego`` is the
ego pose in any fixed world frame (a map's, UTM, ...); ``K`` is in pixels of the image file as stored (its
principal point inside that image: one outside is a K for another resolution, refused); ``timestamp`` in seconds
on any clock (epoch time as logged). A ``Sample`` counts time from its scene's first frame and places the world
origin at that frame's position (float32 keeps neither an epoch time's 0.1 s steps nor a UTM pose's centimetres):
both are re-expressed so, per scene, in float64 before the cast, and every difference between frames is kept. Every line
must list the same cameras in the same order (the rig). Cameras may have different native resolutions:
``image_size`` (a model's network input) resizes every camera to it, rescaling its K and nothing else;
without it every file of every line must have the first line's one size. ``setup`` reports the rig of the
first line (each camera's native size and K, its T_ego_from_cam). Labels are optional per line and use
hydranet's own formats (``hydranet.data.sample``): ragged labels as lists (class/state/camera given by name or
index), dense per-camera labels as ``{camera: file}`` — uint8 PNG of ids for ``drivable``/``lanes``/``semantic``;
``depth`` as a 16-bit PNG of metres x 256 (the KITTI depth convention, 0 = no depth) or a ``.npy`` of
float32 metres — and ``ego_path`` inline ``[[x, y, yaw], ...]``.

Class names in ``classes`` go through the config's ``class_map`` (default: hydranet's own names); a name it
does not map is dropped with its box and counted; a ``class_map`` key that is neither a hydranet class, a model
class nor a name some line uses is refused (``SourceConfigError`` listing the index's names). Config
``{kind: frames, index: FRAMES.jsonl, image_size: [H, W]}``; CLI ``hydranet convert frames --index FRAMES.jsonl
--out SHARDS``. Any problem raises ``SourceError`` naming ``FILE:LINE`` and the field (``cameras.front.K``).
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from hydranet.config_errors import unknown_field
from hydranet.data.sample import (
    LANE_KINDS,
    LIGHT_STATES,
    MAX_WORLD_TRANSLATION_M,
    OBJECT_CLASSES,
    SEMANTIC_CLASSES,
    Sample,
    check_boxes,
    check_map_size,
    check_rigid,
    check_unique,
)
from hydranet.data.sources.base import Source, SourceError, SourceOptions, register_source
from hydranet.data.sources.imaging import load_rgb, resize_label_map, scale_boxes
from hydranet.geometry import check_intrinsics, check_principal_point, resize_intrinsics
from hydranet.limits import LimitError, loads_json, open_image
from hydranet.setup import Camera, Rig, Setup

_Matrix = list[list[float]]


class _CameraEntry(BaseModel):
    """One camera of a ``FRAMES.jsonl`` line: ``image`` path, ``K`` 3×3 in pixels of the stored image,
    ``T_ego_from_cam`` 4×4 (OpenCV camera to ego frame, metres).
    """
    model_config = ConfigDict(extra="forbid")

    image: str
    K: _Matrix
    T_ego_from_cam: _Matrix


class _FrameLine(BaseModel):
    """One ``FRAMES.jsonl`` line as validated fields: scene, frame index, ``timestamp`` (s), the ego pose
    ``T_world_from_ego`` 4×4, the cameras in rig order and the optional labels (module docstring).
    """
    model_config = ConfigDict(extra="forbid")

    scene_id: str
    frame_index: int = 0
    timestamp: float
    T_world_from_ego: _Matrix
    cameras: dict[str, _CameraEntry]
    labels: dict[str, Any] = {}

    @field_validator("timestamp", mode="before")
    @classmethod
    def _a_number(cls, v: Any) -> Any:
        # A JSON number, never a string a lax parse would read ("1700000000.2") or a bool.
        if isinstance(v, str | bool):
            raise ValueError(f"Input should be a valid number, not {type(v).__name__} {v!r}")
        return v


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names a line accepts where pydantic's ``loc`` points (an unknown key's location): a camera
    entry's (``cameras.<name>.<key>``) or the line's own."""
    model = _CameraEntry if len(loc) == 3 and loc[0] == "cameras" else _FrameLine
    return list(model.model_fields)


# Ragged labels: field -> (columns or None for [M], dtype, vocabulary for names, required).
_RAGGED: dict[str, dict[str, tuple[int | None, torch.dtype, tuple[str, ...] | None, bool]]] = {
    "detection2d": {"boxes": (4, torch.float32, None, True), "classes": (None, torch.int64, OBJECT_CLASSES, True),
                    "camera": (None, torch.int64, "camera", True), "visible": (None, torch.float32, None, False),
                    "track_id": (None, torch.int64, None, False)},
    "traffic_light": {"boxes": (4, torch.float32, None, True), "camera": (None, torch.int64, "camera", True),
                      "state": (None, torch.int64, LIGHT_STATES, True), "lane": (None, torch.int64, None, False),
                      "track_id": (None, torch.int64, None, False)},
    "objects3d": {"boxes": (7, torch.float32, None, True), "classes": (None, torch.int64, OBJECT_CLASSES, True),
                  "velocity": (2, torch.float32, None, False), "track_id": (None, torch.int64, None, False)},
}
_DENSE_IDS = {"drivable": (0, 1), "lanes": (0, len(LANE_KINDS) - 1), "semantic": (0, len(SEMANTIC_CLASSES) - 1)}


class FramesOptions(SourceOptions):
    """Options of ``kind: frames``: the ``index`` (``FRAMES.jsonl`` path) and an optional ``image_size``
    (H, W pixels) every camera is resized to (K and pixel labels follow).
    """
    index: str  # the FRAMES.jsonl file
    image_size: tuple[int, int] | None = None  # (H, W) every camera is resized to; None = as stored


@register_source("frames")
class FramesSource(Source):
    """Map-style dataset over a ``FRAMES.jsonl`` index. Lines are parsed and validated when opened (so a bad
    line fails before a long conversion starts); images and label files are read in ``__getitem__``.

    ``image_size``: ``(H, W)`` to resize every camera to (K, 2D boxes and label maps follow); None keeps the
    files' size, which must then agree across cameras. Class names go through ``class_map`` (default: the
    model's own names); names it does not map are dropped with their boxes and counted; integers are model
    class ids."""

    Options = FramesOptions
    path_option = "index"
    labels = frozenset({*_RAGGED, *_DENSE_IDS, "depth", "ego_path"})
    classes = {"detection2d": OBJECT_CLASSES, "objects3d": OBJECT_CLASSES}
    default_class_map = {c: c for c in OBJECT_CLASSES}

    def __init__(self, options: FramesOptions, setup: Setup | None = None):
        super().__init__(options, setup)  # a fleet's class names are its own: an open vocabulary (checked below)
        self.path = Path(options.index).expanduser()
        if not self.path.is_file():
            raise SourceError(f"{self.path}: frames index not found")
        self.base = self.path.parent
        self.image_size = tuple(options.image_size) if options.image_size is not None else None
        self.lines: list[tuple[int, _FrameLine]] = []
        with open(self.path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                if text.strip() and not text.lstrip().startswith("#"):
                    self.lines.append((lineno, self._parse(lineno, text)))
        if not self.lines:
            raise SourceError(f"{self.path}: no frames")
        first_no, first = self.lines[0]
        self.camera_names = tuple(first.cameras)
        if not self.camera_names:
            raise SourceError(f"{self.path}:{first_no}: cameras: at least one camera is needed")
        for lineno, line in self.lines[1:]:
            if tuple(line.cameras) != self.camera_names:
                raise SourceError(f"{self.path}:{lineno}: cameras: {list(line.cameras)} differ from the first "
                                  f"line's {list(self.camera_names)} (the rig must be the same on every line)")
        check_unique(((f"{ln.scene_id}#{ln.frame_index}", self._where(no, "scene_id, frame_index"))
                      for no, ln in self.lines), "frame", SourceError)
        # Each scene's origin in time and space: its first frame's timestamp and ego position. A Sample counts
        # seconds from its sequence's start, and float32 poses keep centimetres only near the world origin: an
        # epoch timestamp or a UTM pose, as a fleet logs them, is re-expressed from there (in float64).
        self.origins: dict[str, tuple[float, list[float]]] = {}
        previous: dict[str, tuple[int, float, int]] = {}  # scene -> (frame index, timestamp, line) of its last frame
        for no, ln in sorted(self.lines, key=lambda item: (item[1].scene_id, item[1].frame_index)):
            self.origins.setdefault(ln.scene_id, (ln.timestamp, [row[3] for row in ln.T_world_from_ego[:3]]))
            last = previous.get(ln.scene_id)
            if last is not None and ln.timestamp < last[1]:  # a video model and the tracker would step back in time
                raise SourceError(f"{self._where(no, 'timestamp')}: {ln.timestamp} is before frame {last[0]}'s "
                                  f"{last[1]} (line {last[2]}): timestamps must not decrease with frame_index in a "
                                  "scene")
            previous[ln.scene_id] = (ln.frame_index, ln.timestamp, no)
        self._check_files()
        # The fleet's vocabulary is open but known once the index is read: a class_map key must be a hydranet
        # class, a model class or a name some line uses (a typo would otherwise map nothing, silently).
        self.refuse_unknown_classes({*self.default_class_map, *self.model_classes, *self._class_names()})

    def _class_names(self) -> set[str]:
        """Every class name the lines' ``detection2d``/``objects3d`` labels use (malformed labels are reported
        when their frame is read)."""
        names: set[str] = set()
        for _, line in self.lines:
            for label in ("detection2d", "objects3d"):
                value = line.labels.get(label)
                classes = value.get("classes") if isinstance(value, dict) else None
                if isinstance(classes, list):
                    names.update(c for c in classes if isinstance(c, str))
        return names

    @cached_property
    def setup(self) -> Setup:
        """The rig of the first line: per camera its native image size (the file header, not decoded), K and
        T_ego_from_cam; the output size (``image_size``, else the files' one size); no BEV grid."""
        lineno, line = self.lines[0]
        cams, sizes = [], {}
        for name, cam in line.cameras.items():
            path = self._file(cam.image)
            try:
                with open_image(path, str(path)) as im:  # the header only: the pixel limit, no decode
                    w, h = im.size
            except LimitError as e:  # already names the file and the limit
                raise SourceError(f"{self._where(lineno, f'cameras.{name}.image')}: {e}") from None
            except (OSError, ValueError) as e:
                raise SourceError(f"{self._where(lineno, f'cameras.{name}.image')}: cannot read {path} ({e})") from e
            check_principal_point(cam.K, (h, w), self._where(lineno, f"cameras.{name}.K"), SourceError)
            sizes[name] = (h, w)
            cams.append(Camera(name=name, image_size=(h, w), K=cam.K, T_ego_from_cam=cam.T_ego_from_cam))
        size = self.image_size if self.image_size is not None else self._one_size(lineno, sizes)
        return Setup(image_size=size, rigs={"frames": Rig(cameras=tuple(cams))}, grid=None,
                     classes=self.object_classes())

    def label_present(self, index: int, label: str) -> bool:
        """Whether the line of sample ``index`` gives label ``label`` (no file is read)."""
        return label in self.lines[index][1].labels

    def _where(self, lineno: int, field: str = "") -> str:
        return f"{self.path}:{lineno}" + (f": {field}" if field else "")

    def _one_size(self, lineno: int, sizes: dict[str, tuple[int, int]], rig: tuple[int, int] | None = None
                  ) -> tuple[int, int]:
        """The one native size (H, W) of every camera of line ``lineno`` (``sizes``: camera -> (H, W)) when nothing is
        resized (no ``image_size``), equal to ``rig``, the first line's, when given. ``SourceError`` lists every
        camera's size and the rig's, and names the camera that differs from the rig (when it is one)."""
        one = set(sizes.values())
        if len(one) == 1 and (rig is None or tuple(rig) in one):
            return one.pop()
        odd = [name for name, hw in sizes.items() if rig is not None and hw != tuple(rig)]
        field = f"cameras.{odd[0]}.image" if len(odd) == 1 else "cameras"
        listing = ", ".join(f"{name} {w}x{h}" for name, (h, w) in sizes.items())
        declared = f"; the rig (line {self.lines[0][0]}) is {rig[1]}x{rig[0]}" if rig is not None else ""
        raise SourceError(f"{self._where(lineno, field)}: image sizes (WxH) {listing}{declared}: without image_size "
                          "every camera of every line must have one size; pass image_size (--image-size HxW: the "
                          "model's input size) to resize every camera to it, or, where a command has no --image-size "
                          "(predict, show), give --data a source YAML: {kind: frames, index: FRAMES.jsonl, "
                          "image_size: [H, W]}")

    def _parse(self, lineno: int, text: str) -> _FrameLine:
        try:
            raw = loads_json(text, self._where(lineno), SourceError)
        except json.JSONDecodeError as e:
            raise SourceError(f"{self._where(lineno)}: not valid JSON ({e.msg.removesuffix(' at')}, column "
                              f"{e.colno})") from e
        if not isinstance(raw, dict):
            raise SourceError(f"{self._where(lineno)}: expected a JSON object (one frame), got a "
                              f"{type(raw).__name__}")
        try:
            line = _FrameLine.model_validate(raw)
        except ValidationError as e:
            # An unknown key first: a misspelt one ("imgae") also leaves its field missing, and the typo is the cause.
            err = min(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
            loc = ".".join(str(p) for p in err["loc"]) or "<line>"
            msg = (unknown_field(str(err["loc"][-1]), _known_fields(err["loc"])) if err["type"] == "extra_forbidden"
                   else err["msg"].removeprefix("Value error, "))
            raise SourceError(f"{self._where(lineno, loc)}: {msg}") from None
        check_rigid(self._matrix(line.T_world_from_ego, (4, 4), lineno, "T_world_from_ego"),
                    self._where(lineno, "T_world_from_ego"), SourceError)
        if not math.isfinite(line.timestamp):
            raise SourceError(f"{self._where(lineno, 'timestamp')}: must be finite")
        for name, cam in line.cameras.items():
            K = self._matrix(cam.K, (3, 3), lineno, f"cameras.{name}.K")
            check_intrinsics(K, self._where(lineno, f"cameras.{name}.K"), SourceError)
            check_rigid(self._matrix(cam.T_ego_from_cam, (4, 4), lineno, f"cameras.{name}.T_ego_from_cam"),
                        self._where(lineno, f"cameras.{name}.T_ego_from_cam"), SourceError)
        for label in line.labels:
            if label not in _RAGGED and label not in _DENSE_IDS and label not in ("depth", "ego_path"):
                supported = sorted([*_RAGGED, *_DENSE_IDS, "depth", "ego_path"])
                typo = unknown_field(label, supported).removeprefix("unknown field ")  # "(typo of 'objects3d'?)"
                raise SourceError(f"{self._where(lineno, f'labels.{label}')}: unknown label {typo}; frames supports "
                                  f"{supported}")
        return line

    def _matrix(self, m: _Matrix, shape: tuple[int, int], lineno: int, field: str) -> torch.Tensor:
        t = torch.tensor(m, dtype=torch.float64) if all(len(r) == shape[1] for r in m) else None
        if t is None or tuple(t.shape) != shape:
            raise SourceError(f"{self._where(lineno, field)}: expected a {shape[0]}x{shape[1]} matrix")
        if not torch.isfinite(t).all():
            raise SourceError(f"{self._where(lineno, field)}: non-finite value")
        return t

    def __len__(self) -> int:
        return len(self.lines)

    def describe(self) -> dict[str, Any]:
        """``Source.describe`` and ``scene_origins``: each scene's first timestamp (s) and ego position (m, world
        frame), float64, which the samples count from (float32 cannot carry an epoch time or a UTM position): a
        converted dataset keeps them in its manifest, so its times and poses can be put back on the map."""
        return {**super().describe(),
                "scene_origins": {scene: {"timestamp": t0, "position": origin}
                                  for scene, (t0, origin) in self.origins.items()}}

    def _check_files(self) -> None:
        """Every image and label map the index names must exist: found now, not hours into a training run when
        the frame is first drawn (one ``stat`` per file). ``SourceError`` names the line and field."""
        for no, line in self.lines:
            for name, cam in line.cameras.items():
                if not self._file(cam.image).is_file():
                    raise SourceError(f"{self._where(no, f'cameras.{name}.image')}: {self._file(cam.image)}: image "
                                      "file not found")
            for label, value in line.labels.items():
                if isinstance(value, dict) and (label in _DENSE_IDS or label == "depth"):
                    for cam, rel in value.items():
                        if isinstance(rel, str) and not self._file(rel).is_file():
                            raise SourceError(f"{self._where(no, f'labels.{label}.{cam}')}: {self._file(rel)} not "
                                              "found")

    def _file(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base / p

    def __getitem__(self, index: int) -> Sample:
        lineno, line = self.lines[index]
        images, Ks, Ts, scales, stored = [], [], [], [], {}
        for name, cam in line.cameras.items():
            try:
                img, stored[name] = load_rgb(self._file(cam.image), self.image_size)
            except SourceError as e:
                raise SourceError(f"{self._where(lineno, f'cameras.{name}.image')}: {e}") from e
            check_principal_point(cam.K, stored[name], self._where(lineno, f"cameras.{name}.K"), SourceError)
            images.append(img)
        size = self.image_size or self._one_size(lineno, stored, tuple(self.setup.image_size))
        for name, cam in line.cameras.items():
            h0, w0 = stored[name]
            sx, sy = size[1] / w0, size[0] / h0
            Ks.append(resize_intrinsics(torch.tensor(cam.K, dtype=torch.float64), sx, sy))
            Ts.append(torch.tensor(cam.T_ego_from_cam, dtype=torch.float64))
            scales.append((sx, sy))
        labels = {k: self._label(lineno, k, v, size, scales, list(stored.values())) for k, v in line.labels.items()}
        t0, origin = self.origins[line.scene_id]
        T_world_from_ego = torch.tensor(line.T_world_from_ego, dtype=torch.float64)
        T_world_from_ego[:3, 3] -= torch.tensor(origin, dtype=torch.float64)
        far = float(T_world_from_ego[:3, 3].abs().max())
        if far > MAX_WORLD_TRANSLATION_M:  # named here, by line: Sample.validate would name only the sample index
            raise SourceError(f"{self._where(lineno, 'T_world_from_ego')}: the ego is {far:.3g} m from its scene's "
                              f"first frame (more than {MAX_WORLD_TRANSLATION_M:.0f} m: a pose in other units, or of "
                              "another scene?)")
        return Sample(images=torch.stack(images), intrinsics=torch.stack(Ks).float(),
                      T_ego_from_cam=torch.stack(Ts).float(), T_world_from_ego=T_world_from_ego.float(),
                      timestamp=line.timestamp - t0, scene_id=line.scene_id, frame_index=line.frame_index,
                      camera_names=self.camera_names, labels=labels)

    # ---- labels --------------------------------------------------------------------------------
    def _label(self, lineno: int, name: str, value: Any, size: tuple[int, int], scales: list,
               stored: list[tuple[int, int]]) -> Any:
        where = f"labels.{name}"
        if name in _RAGGED:
            return self._ragged(lineno, name, value, scales)
        if name == "ego_path":
            return self._array(lineno, where, value, 3, torch.float32)
        if not isinstance(value, dict) or set(value) != set(self.camera_names):
            extra = sorted(set(value) - set(self.camera_names)) if isinstance(value, dict) else []
            missing = [c for c in self.camera_names if c not in value] if isinstance(value, dict) else []
            which = "; ".join(part for part in (f"{extra} are not cameras of the rig" if extra else "",
                                                 f"no file for {missing}" if missing else "") if part)
            raise SourceError(f"{self._where(lineno, where)}: expected {{camera: file}} for every camera "
                              f"{list(self.camera_names)}" + (f" ({which})" if which else ""))
        maps = [self._dense_file(lineno, f"{where}.{cam}", name, self._file(value[cam]), size, stored[k])
                for k, cam in enumerate(self.camera_names)]
        return torch.from_numpy(np.stack(maps))

    def _dense_file(self, lineno: int, where: str, name: str, path: Path, size: tuple[int, int],
                    image_hw: tuple[int, int]) -> np.ndarray:
        if not path.is_file():
            raise SourceError(f"{self._where(lineno, where)}: {path} not found")
        try:
            if path.suffix == ".npy":
                a = np.load(path, allow_pickle=False)
            else:
                with open_image(path, str(path)) as im:
                    a = np.asarray(im)
        except LimitError as e:  # already names the file and the limit
            raise SourceError(f"{self._where(lineno, where)}: {e}") from None
        except (OSError, ValueError) as e:
            raise SourceError(f"{self._where(lineno, where)}: cannot read {path} ({e})") from e
        if a.ndim != 2:
            raise SourceError(f"{self._where(lineno, where)}: {path} must be a single-channel map, got {a.shape}")
        check_map_size(a.shape, image_hw, f"{self._where(lineno, where)}: {path}", SourceError)
        if name == "depth":
            depth = a.astype(np.float32) / 256.0 if a.dtype == np.uint16 else a.astype(np.float32)
            if a.dtype not in (np.uint16, np.float32, np.float64):
                raise SourceError(f"{self._where(lineno, where)}: depth must be a uint16 PNG (m x 256) or float .npy")
            if not np.isfinite(depth).all() or (depth < 0).any():
                raise SourceError(f"{self._where(lineno, where)}: depth must be finite and >= 0 (0 = no depth)")
            return resize_label_map(depth, size)
        lo, hi = _DENSE_IDS[name]
        if a.dtype != np.uint8 or a.max(initial=0) > hi:
            raise SourceError(f"{self._where(lineno, where)}: {name} must be uint8 ids in {lo}..{hi}, got {a.dtype} "
                              f"max {a.max(initial=0)}")
        return resize_label_map(a, size)

    def _array(self, lineno: int, where: str, value: Any, cols: int | None, dtype: torch.dtype,
               unknown_ok: bool = False) -> torch.Tensor:
        """``value`` as a ``[M]`` / ``[M, cols]`` tensor of ``dtype``; ``SourceError`` naming ``where`` otherwise.
        ``unknown_ok``: a ``null`` row or entry means unknown and becomes NaN (a box's velocity)."""
        if unknown_ok and isinstance(value, list):
            value = [[math.nan] * (cols or 1) if r is None else [math.nan if x is None else x for x in r]
                     if isinstance(r, list) else r for r in value]
        if cols is not None and isinstance(value, list) and all(isinstance(r, list) for r in value):
            bad = next((k for k, r in enumerate(value) if len(r) != cols), None)
            if bad is not None:  # a row of another length: say which, not numpy's "inhomogeneous shape"
                raise SourceError(f"{self._where(lineno, where)}: expected shape [M, {cols}], row {bad} has "
                                  f"{len(value[bad])} values")
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise SourceError(f"{self._where(lineno, where)}: not a list of numbers ({e})") from e
        if a.size == 0:
            a = a.reshape((0, cols) if cols else (0,))
        if (cols is None and a.ndim != 1) or (cols is not None and (a.ndim != 2 or a.shape[1] != cols)):
            raise SourceError(f"{self._where(lineno, where)}: expected shape [M{', ' + str(cols) if cols else ''}], "
                              f"got {list(a.shape)}")
        if not (np.isfinite(a) | (unknown_ok & np.isnan(a))).all():
            raise SourceError(f"{self._where(lineno, where)}: non-finite value"
                              + (" (write null for an unknown one)" if unknown_ok else ""))
        return torch.from_numpy(a).to(dtype)

    def _ragged(self, lineno: int, name: str, value: Any, scales: list) -> dict[str, torch.Tensor]:
        if not isinstance(value, dict):
            raise SourceError(f"{self._where(lineno, f'labels.{name}')}: expected an object of fields")
        spec = _RAGGED[name]
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise SourceError(f"{self._where(lineno, f'labels.{name}.{unknown[0]}')}: "
                              f"{unknown_field(unknown[0], spec)}; known: {list(spec)}")
        out: dict[str, torch.Tensor] = {}
        for field, (cols, dtype, vocab, required) in spec.items():
            where = f"labels.{name}.{field}"
            if field not in value:
                if required:
                    raise SourceError(f"{self._where(lineno, where)}: missing")
                continue
            v = value[field]
            if vocab is not None:
                if not isinstance(v, list):
                    raise SourceError(f"{self._where(lineno, where)}: expected a list")
                names = self.camera_names if vocab == "camera" else self.model_classes if field == "classes" else vocab
                v = [self._vocab(lineno, f"{where}[{i}]", x, names, field == "classes") for i, x in enumerate(v)]
            out[field] = self._array(lineno, where, v, cols, dtype, unknown_ok=field == "velocity")
        m = len(out["boxes"])
        for field, t in out.items():
            if len(t) != m:
                raise SourceError(f"{self._where(lineno, f'labels.{name}.{field}')}: {len(t)} entries, boxes has {m}")
        check_boxes(name, out["boxes"], self._where(lineno, f"labels.{name}"), error=SourceError)
        if "classes" in out:  # classes the class_map drops (-1) take their boxes with them
            keep = out["classes"] >= 0
            out = {k: t[keep] for k, t in out.items()}
            m = int(keep.sum())
        if "camera" in out and name != "objects3d":  # pixel boxes follow their camera's resize
            for i, cam in enumerate(out["camera"].tolist()):
                out["boxes"][i] = scale_boxes(out["boxes"][i:i + 1], *scales[cam])[0]
        if "visible" in spec and "visible" not in out:
            out["visible"] = torch.ones(m)
        if "track_id" not in out:
            out["track_id"] = torch.arange(m, dtype=torch.int64)
        return out

    def _vocab(self, lineno: int, where: str, x: Any, names: tuple[str, ...], mapped: bool) -> int:
        if isinstance(x, str) and mapped:
            c = self.class_map(x)  # the dataset's class name -> model class id, or dropped and counted
            return -1 if c is None else c
        if isinstance(x, str):
            if x not in names:
                raise SourceError(f"{self._where(lineno, where)}: '{x}' is not one of {list(names)}")
            return names.index(x)
        if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < len(names):
            return x
        raise SourceError(f"{self._where(lineno, where)}: {x!r} is neither a name in {list(names)} nor an index")
