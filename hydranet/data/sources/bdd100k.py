"""BDD100K (Yu et al., CVPR 2020) as hydranet ``Sample``s: one front dash camera, camera tasks only.

Layout read (the official ``bdd100k_images_100k`` / ``bdd100k_labels`` / ``bdd100k_*_masks`` zips unpacked;
every path can also be given explicitly; a ``root`` holding the frames themselves, with no ``images/100k``
below it, is read as the image folder, so ``bdd100k:DIR`` works on a loose folder of JPEGs)::

    ROOT/images/100k/<split>/*.jpg                          1280x720 dash-cam frames
    ROOT/labels/det_20/det_<split>.json                     detection 2020 (Scalabel), or the 2018
    ROOT/labels/bdd100k_labels_images_<split>.json          combined file (boxes + lane/drivable poly2d)
    ROOT/labels/lane/polygons/lane_<split>.json             lane poly2d (Scalabel)
    ROOT/labels/lane/masks/<split>/*.png                    lane bit-code masks (used when no lane JSON)
    ROOT/labels/drivable/masks/<split>/*.png                drivable ids 0 direct, 1 alternative, 2 background

Labels produced (formats of ``hydranet.data.sample``), each only when its source covers the frame (else the
label is absent — partial labels):
- ``detection2d``: ``box2d`` of categories in ``class_map`` (default: car→car, truck/bus→truck,
  pedestrian/person→pedestrian, traffic light→traffic_light); ``rider``, two-wheelers, ``train`` and
  ``traffic sign`` have no model class and are dropped and counted (``class_map.report()``). ``visible`` is 1.0, x0.5
  when ``occluded``, x0.5 when ``truncated`` (BDD marks both as booleans).
- ``traffic_light``: lights whose ``trafficLightColor`` is red/yellow/green (2018 words or 2020 letters
  R/Y/G) with ``state`` in ``LIGHT_STATES`` order; colour "none"/"NA" lights stay in ``detection2d`` only, as
  the synthetic world labels a light's state only where its lit lamp shows: the task detects lights whose state
  can be read. Any other colour value is refused, naming the frame and the label.
  BDD does not say which lane a light governs, so the ``lane`` field is left out.
- ``drivable``: 1 for "direct" and "alternative" drivable area (mask ids 0/1, or poly2d "drivable area").
- ``lanes``: poly2d lane markings rasterised as polylines (cubic Béziers for ``C`` vertices, as Scalabel
  draws them) ``lane_width`` px wide at 1280x720, or the bit-code masks of ``bdd100k.label.to_mask``
  (value = category + (style << 4) + (direction << 5), 255 background): road curb → road_edge (3),
  other markings dashed → 1 / solid → 2; crosswalks and "vertical" markings (stop lines) are not lane lines
  and stay 0. Masks are shrunk with a max filter so thin markings survive the resize.

Geometry: BDD ships no calibration. K is the nominal pinhole ``intrinsics_from_fov(1280, 720, hfov_deg)``
(default hfov 65°, fx ≈ 1005 px, stated in the source config) and the camera sits at ``camera_position``
(ego, m) looking straight ahead. ``T_world_from_ego`` is the identity; the timestamp is the JSON's
``timestamp`` in seconds (ms in the file) when present. BEV labels are never produced: the geometry is nominal.

Config: ``{kind: bdd100k, root: DIR, split: val, image_size: [H, W]}``; CLI ``hydranet convert bdd100k --root DIR
--split val --image-size 288x512 --out SHARDS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import Field

from hydranet.data.sample import Sample, check_map_size
from hydranet.data.sources.base import Source, SourceError, SourceOptions, register_source
from hydranet.data.sources.imaging import load_rgb, resize_label_map, scale_boxes
from hydranet.geometry import camera_extrinsics, intrinsics_from_fov, resize_intrinsics
from hydranet.limits import loads_json, open_image
from hydranet.setup import Setup

# BDD100K detection categories: det_20 (2020) names, then the 2018 names that differ.
_BDD_CLASSES: tuple[str, ...] = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
                                "traffic light", "traffic sign", "person", "bike", "motor")
# BDD category -> model class (config ``class_map`` overrides entries). Buses are large vehicles: the model's truck.
DEFAULT_CLASS_MAP: dict[str, str | None] = {
    "car": "car", "truck": "truck", "bus": "truck", "pedestrian": "pedestrian", "person": "pedestrian",
    "traffic light": "traffic_light", "rider": None, "train": None, "motorcycle": None, "bicycle": None,
    "traffic sign": None, "bike": None, "motor": None}
_LANE_CATEGORIES: tuple[str, ...] = ("crosswalk", "double other", "double white", "double yellow", "road curb",
                                    "single other", "single white", "single yellow")  # bdd100k lane_marks ids
_LIGHT = {"red": 0, "r": 0, "yellow": 1, "y": 1, "green": 2, "g": 2}
# Lights BDD labels without a readable colour (2018 "none", 2020 "NA", or no attribute at all).
_NO_STATE = frozenset({"none", "na", ""})
_BDD_SIZE = (720, 1280)


def read_frames(path: str | os.PathLike) -> dict[str, dict]:
    """Load a BDD100K / Scalabel label JSON (a list of frames, or ``{"frames": [...]}``) keyed by image name.
    Raises ``SourceError`` naming the file (and frame index) when it is not that format."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: label file not found")
    try:
        raw = loads_json(path.read_text(), str(path), SourceError)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: cannot read JSON ({type(e).__name__}: {e})") from e
    frames = raw.get("frames") if isinstance(raw, dict) else raw
    if not isinstance(frames, list):
        raise SourceError(f"{path}: expected a list of frames or {{'frames': [...]}}")
    out: dict[str, dict] = {}
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise SourceError(f"{path}: frame {i} has no 'name'")
        labels = f.get("labels") or []
        if not isinstance(labels, list):
            raise SourceError(f"{path}: frame {i} ({f['name']}): 'labels' must be a list")
        name = Path(f["name"]).name
        if name in out:
            raise SourceError(f"{path}: frame {i} ({name}) is listed twice (a frame's labels must be in one entry)")
        out[name] = f
    return out


def bezier_polyline(vertices: list[list[float]], types: str | None, steps: int = 12) -> list[tuple[float, float]]:
    """Scalabel poly2d vertices to a polyline: ``L`` vertices are corners, each ``L C C L`` run is a cubic Bézier."""
    pts = [(float(x), float(y)) for x, y in vertices]
    if not types or "C" not in types:
        return pts
    if len(types) != len(pts):
        raise ValueError(f"poly2d has {len(pts)} vertices but types {types!r}")
    out = [pts[0]]
    i = 0
    while i < len(pts) - 1:
        if types[i + 1] == "C" and i + 3 < len(pts):
            p0, p1, p2, p3 = (np.array(p) for p in pts[i:i + 4])
            for t in np.linspace(0, 1, steps)[1:]:
                q = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
                out.append((float(q[0]), float(q[1])))
            i += 3
        else:
            out.append(pts[i + 1])
            i += 1
    return out


def _lane_kind(category: str, attrs: dict) -> int:
    """hydranet lane kind (0 none, 1 dashed, 2 solid, 3 road edge) of one BDD lane label."""
    if category == "lane" or category.startswith("lane/"):  # 2018 format: type in attributes or the suffix
        category = str(attrs.get("laneType", category.partition("/")[2]))
    if category not in _LANE_CATEGORIES or category == "crosswalk" or attrs.get("laneDirection") == "vertical":
        return 0
    if category == "road curb":
        return 3
    return 1 if attrs.get("laneStyle") == "dashed" else 2


def _rasterise_lanes(labels: list[dict], size: tuple[int, int], scale: tuple[float, float],
                    lane_width: float = 8.0) -> np.ndarray | None:
    """uint8 ``[H, W]`` lane-kind map from BDD lane poly2d labels (None when the frame has no lane label).
    ``scale`` = (sx, sy) from file pixels to ``size``; the line width is ``lane_width`` file pixels."""
    h, w = size
    sx, sy = scale
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(lane_width * (sx + sy) / 2))
    found = False
    # Draw lower kinds first so a road edge crossing a marking wins (same priority as the max filter).
    items = []
    for lab in labels:
        cat, attrs = str(lab.get("category", "")), lab.get("attributes") or {}
        if not (cat in _LANE_CATEGORIES or cat == "lane" or cat.startswith("lane/")):
            continue
        found = True
        kind = _lane_kind(cat, attrs)
        for poly in lab.get("poly2d") or []:
            if kind:
                items.append((kind, poly))
    for kind, poly in sorted(items, key=lambda t: t[0]):
        pts = bezier_polyline(poly["vertices"], poly.get("types"))
        pts = [(x * sx, y * sy) for x, y in pts]
        if len(pts) >= 2:
            draw.line(pts, fill=kind, width=width, joint="curve")
    return np.asarray(canvas, dtype=np.uint8).copy() if found else None


def decode_lane_mask(mask: np.ndarray) -> np.ndarray:
    """BDD lane bit-code mask (``to_mask``: category + style<<4 + direction<<5, 255 background) to lane kinds."""
    cat = mask & 0x7
    dashed = (mask >> 4) & 1
    vertical = (mask >> 5) & 1
    kind = np.where(dashed == 1, 1, 2).astype(np.uint8)
    kind[cat == _LANE_CATEGORIES.index("road curb")] = 3
    kind[(cat == 0) | (vertical == 1) | (mask == 255)] = 0
    return kind


def _shrink_max(kind: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a small-integer map keeping the max value that falls in each target pixel (thin lines survive)."""
    h0, w0 = kind.shape
    h, w = size
    out = np.zeros((h, w), dtype=np.uint8)
    ys, xs = np.nonzero(kind)
    np.maximum.at(out, (np.minimum(ys * h // h0, h - 1), np.minimum(xs * w // w0, w - 1)), kind[ys, xs])
    return out


def _polygon_mask(labels: list[dict], size: tuple[int, int], scale: tuple[float, float]) -> np.ndarray | None:
    h, w = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    found = False
    for lab in labels:
        if lab.get("category") != "drivable area":
            continue
        found = True
        for poly in lab.get("poly2d") or []:
            pts = [(x * scale[0], y * scale[1]) for x, y in bezier_polyline(poly["vertices"], poly.get("types"))]
            if len(pts) >= 3:
                draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=np.uint8).copy() if found else None


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in folder.iterdir())


class BDD100KOptions(SourceOptions):
    """Options of ``kind: bdd100k``: the dataset ``root`` and ``split``, optional explicit label paths,
    the output ``image_size`` (H, W pixels), and the nominal camera (``hfov_deg``, ego-frame
    ``camera_position`` in metres) that stands in for the calibration BDD100K does not ship.
    """
    root: str  # the folder holding images/ and labels/
    split: str = "val"  # train, val or test: the <split> in the default paths
    images: str | None = None  # image folder (default ROOT/images/100k/<split>)
    detection: str | None = None  # detection JSON (default det_20/det_<split>.json or the 2018 combined file)
    lanes: str | None = None  # lane poly2d JSON (default ROOT/labels/lane/polygons/lane_<split>.json)
    lane_masks: str | None = None  # lane bit-code mask folder (default ROOT/labels/lane/masks/<split>)
    drivable_masks: str | None = None  # drivable id mask folder (default ROOT/labels/drivable/masks/<split>)
    image_size: tuple[int, int] | None = None  # (H, W) output size; None = as stored (720, 1280)
    hfov_deg: float = Field(65.0, gt=10, lt=170)  # nominal horizontal field of view (BDD ships no calibration)
    camera_position: tuple[float, float, float] = (1.5, 0.0, 1.35)  # nominal camera position in the ego frame, m
    lane_width: float = Field(8.0, gt=0)  # rasterised lane line width in pixels at 1280x720


@register_source("bdd100k")
class BDD100KSource(Source):
    """BDD100K images of one split with whichever label sources exist (see the module docstring).
    A path option given explicitly must exist; a default one is simply not used when absent."""

    Options = BDD100KOptions
    path_option = "root"
    labels = frozenset({"detection2d", "traffic_light", "drivable", "lanes"})
    classes = {"detection2d": _BDD_CLASSES}
    default_class_map = DEFAULT_CLASS_MAP
    closed_vocabulary = True  # a published class list: a class_map key outside it is a typo
    camera_names = ("front",)

    def __init__(self, options: BDD100KOptions, setup: Setup | None = None):
        super().__init__(options, setup)
        o = options
        root = Path(o.root).expanduser()
        self.images = self._given(o.images, "images") or root / "images" / "100k" / o.split
        if o.images is None and not self.images.is_dir() and root.is_dir() and _has_images(root):
            self.images = root  # "bdd100k:DIR" on a loose folder of frames: those images, labels as found
        if not self.images.is_dir():
            raise SourceError(f"{self.images}: image folder not found (expected ROOT/images/100k/<split>/*.jpg; "
                              f"give a loose folder of frames with --images DIR or as ROOT itself)")
        self.names = sorted(p.name for p in self.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.names:
            raise SourceError(f"{self.images}: no .jpg/.png images")
        det = self._given(o.detection, "detection") or next(
            (p for p in (root / "labels" / "det_20" / f"det_{o.split}.json",
                         root / "labels" / f"bdd100k_labels_images_{o.split}.json") if p.is_file()), None)
        self.detection = read_frames(det) if det is not None else None
        self.detection_path = det
        if self.detection is not None:
            unmatched = len(set(self.detection) - set(self.names))
            if unmatched:
                self.skipped[f"frames of {det.name} naming no image in {self.images}"] = unmatched
        lane_json = self._given(o.lanes, "lanes") or root / "labels" / "lane" / "polygons" / f"lane_{o.split}.json"
        self.lanes = read_frames(lane_json) if lane_json.is_file() else None
        self.lane_masks = self._given(o.lane_masks, "lane_masks") or root / "labels" / "lane" / "masks" / o.split
        self.drivable_masks = self._given(o.drivable_masks, "drivable_masks") or \
            root / "labels" / "drivable" / "masks" / o.split
        self.image_size = tuple(o.image_size) if o.image_size is not None else None
        self.hfov_deg, self.camera_position, self.lane_width = o.hfov_deg, tuple(o.camera_position), o.lane_width

    @staticmethod
    def _given(path: str | os.PathLike | None, field: str) -> Path | None:
        if path is None:
            return None
        p = Path(path)
        if not p.exists():
            raise SourceError(f"bdd100k.{field}: {p} does not exist")
        return p

    def __len__(self) -> int:
        return len(self.names)

    def label_present(self, index: int, label: str) -> bool:
        """Whether sample ``index`` carries ``label``, from the label files alone (no image decode)."""
        name = self.names[index]
        stem = Path(name).stem
        frame = self.detection.get(name) if self.detection is not None else None
        cats = {str(lab.get("category", "")) for lab in (frame or {}).get("labels") or []}
        if label in ("detection2d", "traffic_light"):
            return frame is not None
        if label == "drivable":
            return "drivable area" in cats or (self.drivable_masks / f"{stem}.png").is_file()
        if label == "lanes":
            in_frame = any(c == "lane" or c.startswith("lane/") or c in _LANE_CATEGORIES for c in cats)
            return in_frame or (self.lanes is not None and name in self.lanes) or \
                (self.lane_masks / f"{stem}.png").is_file()
        return False

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image, (h0, w0) = load_rgb(self.images / name, self.image_size)
        h, w = image.shape[-2:]
        scale = (w / w0, h / h0)
        # Nominal K is defined at BDD's 1280x720; scale to this file's size, then to the output size.
        K = resize_intrinsics(intrinsics_from_fov(_BDD_SIZE[1], _BDD_SIZE[0], self.hfov_deg), w / _BDD_SIZE[1],
                              h / _BDD_SIZE[0])
        T = camera_extrinsics(self.camera_position, 0.0, 0.0)
        labels: dict[str, Any] = {}
        frame = self.detection.get(name) if self.detection is not None else None
        timestamp = 0.0
        stem = Path(name).stem
        if frame is not None:
            timestamp = float(frame.get("timestamp", 0) or 0) / 1000.0
            labels.update(self._boxes(frame["labels"] or [], scale, f"{self.detection_path}: {name}", (w0, h0)))
            drivable = _polygon_mask(frame["labels"] or [], (h, w), scale)
            if drivable is not None:
                labels["drivable"] = torch.from_numpy(drivable)[None]
            lanes = _rasterise_lanes(frame["labels"] or [], (h, w), scale, self.lane_width)
            if lanes is not None:
                labels["lanes"] = torch.from_numpy(lanes)[None]
        lane_frame = self.lanes.get(name) if self.lanes is not None else None
        if lane_frame is not None:
            lanes = _rasterise_lanes(lane_frame.get("labels") or [], (h, w), scale, self.lane_width)
            labels["lanes"] = torch.from_numpy(lanes if lanes is not None else np.zeros((h, w), np.uint8))[None]
        elif (self.lane_masks / f"{stem}.png").is_file():
            mask = self._mask(self.lane_masks, stem)
            check_map_size(mask.shape, (h0, w0), str(self.lane_masks / f"{stem}.png"), SourceError)
            labels["lanes"] = torch.from_numpy(_shrink_max(decode_lane_mask(mask), (h, w)))[None]
        if (self.drivable_masks / f"{stem}.png").is_file():
            ids = self._mask(self.drivable_masks, stem)
            check_map_size(ids.shape, (h0, w0), str(self.drivable_masks / f"{stem}.png"), SourceError)
            drivable = (ids <= 1).astype(np.uint8)
            labels["drivable"] = torch.from_numpy(resize_label_map(drivable, (h, w)))[None]
        return Sample(images=image[None], intrinsics=K.float()[None], T_ego_from_cam=T.float()[None],
                      T_world_from_ego=torch.eye(4), timestamp=timestamp, scene_id=f"bdd100k/{stem}",
                      frame_index=int(frame.get("frameIndex", 0) or 0) if frame else 0,
                      camera_names=self.camera_names, labels=labels)

    @staticmethod
    def _mask(folder: Path, stem: str) -> np.ndarray:
        path = folder / f"{stem}.png"
        try:
            with open_image(path, str(path)) as im:
                if im.mode not in ("L", "P"):
                    raise SourceError(f"{path}: expected a single-channel id mask, got mode {im.mode}")
                return np.asarray(im, dtype=np.uint8)
        except OSError as e:
            raise SourceError(f"{path}: cannot decode mask ({e})") from e

    def _boxes(self, labels: list[dict], scale: tuple[float, float], name: str, image_wh: tuple[int, int]) -> dict:
        """``detection2d`` and ``traffic_light`` of one frame's ``labels`` (boxes in the file's pixels, scaled by
        ``scale``). Raises ``SourceError`` naming ``name`` (the label file and frame) and the label for a box that is
        not numeric, inverted or reaches past the image by more than a tenth of its side, or an unknown light colour."""
        boxes, classes, visible, ids = [], [], [], []
        lights, states = [], []
        for j, lab in enumerate(labels):
            box = lab.get("box2d")
            if box is None:
                continue  # poly2d labels (lanes, drivable area) are read elsewhere
            cat = str(lab.get("category", ""))
            cls = self.class_map(cat)  # counts kept / dropped per BDD category
            if cls is None:
                continue
            try:
                xyxy = [float(box[k]) for k in ("x1", "y1", "x2", "y2")]
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(f"{name}: label {j} ({cat}): box2d needs numeric x1, y1, x2, y2 ({e})") from e
            if not all(np.isfinite(xyxy)) or xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
                raise SourceError(f"{name}: label {j} ({cat}): invalid box2d {xyxy}")
            w0, h0 = image_wh
            if xyxy[0] < -0.1 * w0 or xyxy[1] < -0.1 * h0 or xyxy[2] > 1.1 * w0 or xyxy[3] > 1.1 * h0:
                raise SourceError(f"{name}: label {j} ({cat}): box2d {xyxy} reaches far outside the "
                                  f"{w0}x{h0} image")
            attrs = lab.get("attributes") or {}
            boxes.append(xyxy)
            classes.append(cls)
            visible.append((0.5 if attrs.get("occluded") else 1.0) * (0.5 if attrs.get("truncated") else 1.0))
            ids.append(j)
            if self.model_classes[cls] != "traffic_light":
                continue
            colour = str(attrs.get("trafficLightColor", "none")).lower()
            if colour not in _LIGHT and colour not in _NO_STATE:
                raise SourceError(f"{name}: label {j} ({cat}): trafficLightColor {colour!r} is none of "
                                  f"{sorted(set(_LIGHT) | _NO_STATE)}")
            if colour in _LIGHT:  # a light whose state is not readable is no traffic_light label (module docstring)
                lights.append(xyxy)
                states.append(_LIGHT[colour])
        b = scale_boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), *scale)
        out = {"detection2d": {"boxes": b, "classes": torch.tensor(classes, dtype=torch.int64),
                               "camera": torch.zeros(len(boxes), dtype=torch.int64),
                               "visible": torch.tensor(visible, dtype=torch.float32),
                               "track_id": torch.tensor(ids, dtype=torch.int64)}}
        lb = scale_boxes(torch.tensor(lights, dtype=torch.float32).reshape(-1, 4), *scale)
        out["traffic_light"] = {"boxes": lb, "camera": torch.zeros(len(lights), dtype=torch.int64),
                                "state": torch.tensor(states, dtype=torch.int64),
                                "track_id": torch.arange(len(lights), dtype=torch.int64)}
        return out

