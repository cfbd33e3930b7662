"""Drawing for every task: one ``Views`` object (the rig's camera images + a BEV panel) and a few
primitives that draw labels or predictions onto it. PIL only, default font.

    views = Views.from_sample(sample, grid, scale=2)
    draw_boxes2d(views, det["boxes"], det["camera"], det["classes"])
    draw_boxes3d(views, obj["boxes"], obj["classes"])
    views.compose(title="scene 3 frame 12").save("out.png")

Coordinates: 2D boxes and masks are in the *stored* image resolution (``views.image_hw``); the
primitives scale them to the drawn size. BEV inputs are ego metres or ``BevGrid`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from hydranet.data.sample import BEV_CLASSES, LIGHT_STATES, OBJECT_CLASSES, Batch, Sample
from hydranet.geometry import BevGrid, box_corners, invert_transform, transform_points

Color = tuple[int, int, int] | str

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "car": (0, 200, 255), "truck": (255, 140, 0), "pedestrian": (255, 40, 200), "cone": (255, 230, 0),
    "traffic_light": (120, 255, 120),
}
BEV_COLORS: dict[str, tuple[int, int, int]] = {
    "drivable": (90, 90, 110), "lane_marking": (250, 250, 250), "sidewalk": (150, 120, 90),
    "vehicle": (0, 200, 255), "pedestrian": (255, 40, 200), "cone": (255, 230, 0),
}
LIGHT_COLORS: dict[str, tuple[int, int, int]] = {"red": (255, 40, 40), "yellow": (255, 210, 0),
                                                 "green": (40, 255, 90)}
# One lane palette everywhere (labels, predictions, world pictures): dashed, solid, road edge.
LANE_COLORS: dict[int, tuple[int, int, int]] = {1: (255, 255, 0), 2: (0, 255, 255), 3: (255, 60, 60)}
DRIVABLE_COLOR: tuple[int, int, int] = (60, 150, 255)
# Prediction and ground truth share the class colours; ground truth is drawn dashed, predictions solid.
DASH = 4
# Where each default-rig camera goes in the composed picture: (row, column) on a 5 x 2 grid of tiles.
LAYOUT: dict[str, tuple[float, float]] = {
    "left_pillar": (0, 0), "narrow": (0, 1), "main": (0, 2), "wide": (0, 3), "right_pillar": (0, 4),
    "left_repeater": (1, 1), "rear": (1, 2), "right_repeater": (1, 3),
}
# nuScenes' 6-camera rig on a 3 x 2 grid: forward row on top, rear-facing row below (as on the car).
NUSCENES_LAYOUT: dict[str, tuple[float, float]] = {
    "CAM_FRONT_LEFT": (0, 0), "CAM_FRONT": (0, 1), "CAM_FRONT_RIGHT": (0, 2),
    "CAM_BACK_LEFT": (1, 0), "CAM_BACK": (1, 1), "CAM_BACK_RIGHT": (1, 2),
}
EGO_BOX = (1.45, 0.0, 0.75, 4.7, 1.9, 1.5, 0.0)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, fixed size
        return ImageFont.load_default()


def _rgb(color: Color | None, fallback: tuple[int, int, int]) -> tuple[int, int, int]:
    if color is None:
        return fallback
    if isinstance(color, str):
        from PIL import ImageColor

        return ImageColor.getrgb(color)[:3]
    return tuple(int(c) for c in color)[:3]  # type: ignore[return-value]


def _class_name(c: int | str, names: Sequence[str] = OBJECT_CLASSES) -> str:
    if isinstance(c, str):
        return c
    return names[int(c)] if 0 <= int(c) < len(names) else str(int(c))


class Views:
    """The canvases one sample is drawn on: one PIL image per camera and a BEV panel."""

    def __init__(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, camera_names: Sequence[str],
                 grid: BevGrid, scale: float = 2, bev_size: int | None = None) -> None:
        n, _, h, w = images.shape
        self.image_hw = (h, w)
        self.scale = scale
        self.grid = grid
        self.camera_names = tuple(camera_names)
        self.intrinsics = intrinsics.float().cpu()
        self.T_ego_from_cam = T_ego_from_cam.float().cpu()
        arr = images.detach().cpu().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.cameras: list[Image.Image] = [
            Image.fromarray(a).resize((round(w * scale), round(h * scale)),
                                      Image.NEAREST if scale >= 1 else Image.LANCZOS) for a in arr]
        size = bev_size or round(2 * h * scale)
        self.bev_ppm = size / max(grid.x_range[1] - grid.x_range[0], grid.y_range[1] - grid.y_range[0])
        self.bev = Image.new("RGB", (round((grid.y_range[1] - grid.y_range[0]) * self.bev_ppm),
                                     round((grid.x_range[1] - grid.x_range[0]) * self.bev_ppm)), (24, 26, 30))
        self.notes: list[str] = []  # e.g. "detection2d: 0 detections", written under the picture
        self.legend_styles = ("prediction", "ground truth")  # line styles the legend lists: what is drawn
        self._labels: dict[int, list[tuple[float, float, float, float]]] = {}  # placed label boxes per camera
        self._draw_bev_base()

    def place_label(self, camera: int, x: float, y: float, w: float, h: float,
                    step: float) -> tuple[float, float] | None:
        """Where a ``w`` × ``h`` label near (x, y) overlaps no label already placed in ``camera``: tries
        (x, y), then ``step`` further away, up to four times; None = no room (the box stays, unlabelled)."""
        placed = self._labels.setdefault(camera, [])
        for k in range(5):
            yy = y + k * step
            box = (x, yy, x + w, yy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                placed.append(box)
                return x, yy
        return None

    def note(self, text: str) -> None:
        """A line of text for the picture's footer (what a head found nothing of, ...)."""
        if text not in self.notes:
            self.notes.append(text)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_sample(cls, sample: Sample, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Views:
        return cls(sample.images, sample.intrinsics, sample.T_ego_from_cam, sample.camera_names, grid, scale, bev_size)

    @classmethod
    def from_batch(cls, batch: Batch, i: int, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Views:
        return cls(batch.images[i], batch.intrinsics[i], batch.T_ego_from_cam[i], batch.camera_names, grid, scale,
                   bev_size)

    # ---- geometry --------------------------------------------------------------------------
    def bev_px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel (u, v) in the BEV panel of ego point (x, y) metres (car drives up the page)."""
        return (self.grid.y_range[1] - y) * self.bev_ppm, (self.grid.x_range[1] - x) * self.bev_ppm

    def camera_index(self, camera: int | str) -> int:
        return self.camera_names.index(camera) if isinstance(camera, str) else int(camera)

    def project(self, points_ego: Tensor, camera: int) -> tuple[Tensor, Tensor]:
        """Ego points ``[P, 3]`` to drawn-pixel coordinates in ``camera`` plus camera-frame depth."""
        T = invert_transform(self.T_ego_from_cam[camera])
        pc = transform_points(T, points_ego.float())
        z = pc[:, 2]
        K = self.intrinsics[camera]
        zs = z.clamp(min=1e-3)
        u = (K[0, 0] * pc[:, 0] / zs + K[0, 2]) * self.scale
        v = (K[1, 1] * pc[:, 1] / zs + K[1, 2]) * self.scale
        return torch.stack([u, v], 1), z

    # ---- base BEV --------------------------------------------------------------------------
    def _draw_bev_base(self) -> None:
        d = ImageDraw.Draw(self.bev)
        cx, cy = self.bev_px(0.0, 0.0)
        for r in range(10, 80, 10):
            d.ellipse([cx - r * self.bev_ppm, cy - r * self.bev_ppm, cx + r * self.bev_ppm, cy + r * self.bev_ppm],
                      outline=(48, 52, 60))
        self._draw_frustums(d)

    def _draw_frustums(self, d: ImageDraw.ImageDraw) -> None:
        w = self.image_hw[1]
        for i in range(len(self.camera_names)):
            T = self.T_ego_from_cam[i]
            x, y = float(T[0, 3]), float(T[1, 3])
            fwd = T[:3, 2]
            yaw = math.atan2(float(fwd[1]), float(fwd[0]))
            half = math.atan2(w / 2, float(self.intrinsics[i, 0, 0]))
            reach = 6.0 + 10.0 * (1.0 - half / 1.6)
            p0 = self.bev_px(x, y)
            for a in (yaw - half, yaw + half):
                d.line([p0, self.bev_px(x + reach * math.cos(a), y + reach * math.sin(a))], fill=(70, 90, 120))

    def draw_ego(self) -> None:
        draw_boxes3d(self, torch.tensor([EGO_BOX]), ["ego"], color=(255, 255, 255), cameras=False)

    # ---- output ----------------------------------------------------------------------------
    def compose(self, title: str | None = None) -> Image.Image:
        """All cameras laid out as on the car (forward row on top, rear-facing row below) + BEV."""
        self.draw_ego()
        h, w = self.cameras[0].height, self.cameras[0].width
        header = 28 if title else 0
        several = len(self.camera_names) > 1  # a single camera is drawn alone, not in an empty rig layout
        if several and all(n in LAYOUT for n in self.camera_names):
            slots = {i: LAYOUT[n] for i, n in enumerate(self.camera_names)}
            cols, rows = 5, 2
        elif several and all(n in NUSCENES_LAYOUT for n in self.camera_names):
            slots = {i: NUSCENES_LAYOUT[n] for i, n in enumerate(self.camera_names)}
            cols, rows = 3, 2
        else:  # any other rig: rig order, four per row
            slots = {i: (i // 4, i % 4) for i in range(len(self.camera_names))}
            cols, rows = min(4, len(self.camera_names)), math.ceil(len(self.camera_names) / 4)
        bev = self.bev
        if bev.height != rows * h:
            bev = bev.resize((round(bev.width * rows * h / bev.height), rows * h), Image.BILINEAR)
        font = _font(max(12, h // 14))
        line_h = max(12, h // 14) + 6
        # At least as wide as the title; the legend wraps to the width (counted on a scratch canvas first).
        width = max(cols * w + bev.width + 8, round(ImageDraw.Draw(bev).textlength(title or "", font=_font(18))) + 16)
        legend_rows = self._legend(ImageDraw.Draw(Image.new("RGB", (1, 1))), font, 8, 0, line_h, width)
        footer = line_h * (legend_rows + len(self.notes)) + 6
        canvas = Image.new("RGB", (width, rows * h + header + footer), (12, 12, 14))
        d = ImageDraw.Draw(canvas)
        for i, (r, c) in slots.items():
            x0, y0 = int(c * w), int(r * h) + header
            canvas.paste(self.cameras[i], (x0, y0))
            d.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], outline=(12, 12, 14), width=2)
            d.text((x0 + 6, y0 + 4), self.camera_names[i], fill=(255, 255, 255), font=font,
                   stroke_width=2, stroke_fill=(0, 0, 0))
        canvas.paste(bev, (cols * w + 8, header))
        d.text((cols * w + 14, header + 4), "BEV", fill=(255, 255, 255), font=font, stroke_width=2,
               stroke_fill=(0, 0, 0))
        if title:
            d.text((8, 4), title, fill=(230, 230, 230), font=_font(18))
        self._legend(d, font, 8, rows * h + header + 4, line_h, width)
        return canvas

    def _legend(self, d: ImageDraw.ImageDraw, font: Any, x: int, y: int, line_h: int, width: int) -> int:
        """Line styles of ``legend_styles``, the class colours (wrapped to ``width``) and the notes, below the
        cameras; returns the number of legend rows."""
        x0, rows = x, 1
        swatches = [*((s, None) for s in self.legend_styles), *CLASS_COLORS.items(), *LIGHT_COLORS.items(),
                    *((f"lane {k}", LANE_COLORS[i]) for i, k in ((1, "dashed"), (2, "solid"), (3, "edge"))),
                    ("drivable", DRIVABLE_COLOR)]
        for name, col in swatches:
            key = 28 if col is None else 16
            step = key + round(d.textlength(name, font=font)) + 12
            if x > x0 and x + step > width:
                x, y, rows = x0, y + line_h, rows + 1
            mid = y + line_h // 2
            if name == "prediction":
                d.line([(x, mid), (x + 24, mid)], fill=(230, 230, 230), width=2)
            elif name == "ground truth":
                _dashed(d, [(x, mid), (x + 24, mid)], (230, 230, 230), 2)
            else:
                d.rectangle([x, y + 3, x + 12, y + line_h - 5], fill=col)
            d.text((x + key, y), name, fill=(230, 230, 230), font=font)
            x += step
        for k, text in enumerate(self.notes):
            d.text((8, y + line_h * (k + 1)), text, fill=(255, 200, 120), font=font)
        return rows


# ---- primitives ----------------------------------------------------------------------------


def _tolist(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, Tensor):
        return x.detach().cpu().tolist()
    return list(x)


def _dashed(d: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: Any, width: int,
            dash: int = DASH) -> None:
    """A dashed polyline (ground truth): ``dash`` px on, ``dash`` px off."""
    for (xa, ya), (xb, yb) in zip(points[:-1], points[1:], strict=True):
        length = math.hypot(xb - xa, yb - ya)
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            d.line([(xa + (xb - xa) * t0, ya + (yb - ya) * t0), (xa + (xb - xa) * t1, ya + (yb - ya) * t1)],
                   fill=fill, width=width)


def _rect(d: ImageDraw.ImageDraw, box: list[float], col: Any, width: int, dashed: bool) -> None:
    x1, y1, x2, y2 = box
    if dashed:
        _dashed(d, [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)], col, width)
    else:
        d.rectangle([x1, y1, x2, y2], outline=col, width=width)


def _label(views: Views, cam: int, d: ImageDraw.ImageDraw, box: list[float], text: str, col: Any, font: Any,
           below: bool, height: int) -> None:
    """Class label above a prediction's box, below a ground-truth box (a matched pair's labels never meet),
    moved away from labels already drawn, or left out where there is no room."""
    size = getattr(font, "size", 10)
    x1, y1, _, y2 = box
    y = min(y2 + 2, height - size - 2) if below else max(0, y1 - size - 2)
    at = views.place_label(cam, x1 + 2, y, d.textlength(text, font=font), size + 1, (size + 2) * (1 if below else -1))
    if at is not None:
        d.text(at, text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))


def draw_boxes2d(views: Views, boxes: Tensor, camera: Tensor | Sequence[int], classes: Tensor | Sequence[int],
                 color: Color | None = None, scores: Tensor | Sequence[float] | None = None,
                 names: Sequence[str] = OBJECT_CLASSES, dashed: bool = False) -> None:
    """Per-camera 2D boxes (x1, y1, x2, y2 in stored-image pixels), labelled with class (+ score), in the
    class colour; ``dashed`` for ground truth (label below the box), solid for predictions (label above)."""
    font = _font(max(11, round(views.scale * 6)))
    sc = _tolist(scores)
    for k, (box, cam, cls) in enumerate(zip(_tolist(boxes), _tolist(camera), _tolist(classes), strict=True)):
        name = _class_name(cls, names)
        col = _rgb(color, CLASS_COLORS.get(name, (255, 255, 255)))
        x1, y1, x2, y2 = (v * views.scale for v in box)
        ci = views.camera_index(cam)
        img = views.cameras[ci]
        d = ImageDraw.Draw(img)
        rect = [x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)]
        _rect(d, rect, col, max(1, round(views.scale)), dashed)
        _label(views, ci, d, rect, name if not sc else f"{name} {sc[k]:.2f}", col, font, dashed, img.height)


def draw_mask(views: Views, masks: Tensor, color: Color, alpha: float = 0.45) -> None:
    """Blend per-camera masks ``[N, H, W]`` (bool, 0/1 or probabilities) of any resolution."""
    col = torch.tensor(_rgb(color, (255, 0, 0)), dtype=torch.float32)
    m = masks.detach().float().cpu()
    for i, img in enumerate(views.cameras):
        a = torch.nn.functional.interpolate(m[i][None, None], size=(img.height, img.width), mode="bilinear",
                                            align_corners=False)[0, 0].clamp(0, 1) * alpha
        base = torch.from_numpy(np.asarray(img).copy()).float()
        out = base * (1 - a[..., None]) + col * a[..., None]
        views.cameras[i] = Image.fromarray(out.round().clamp(0, 255).to(torch.uint8).numpy())


def draw_lane_masks(views: Views, lanes: Tensor, alpha: float = 0.8) -> None:
    """The ``lanes`` label/prediction (0 none, 1 dashed, 2 solid, 3 road edge) in one colour per kind."""
    for kind, col in LANE_COLORS.items():
        draw_mask(views, lanes == kind, col, alpha)


def _box_edges() -> list[tuple[int, int]]:
    return [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def draw_boxes3d(views: Views, boxes: Tensor, classes: Tensor | Sequence[int | str], color: Color | None = None,
                 cameras: bool = True, names: Sequence[str] = OBJECT_CLASSES, dashed: bool = False) -> None:
    """Ego-frame boxes ``[M, 7]``: footprints in the BEV panel (front edge thicker) and wireframes
    projected into every camera (edges clipped at the camera plane); class colours, ``dashed`` for
    ground truth."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 7)
    if boxes.shape[0] == 0:
        return
    corners = box_corners(boxes)  # [M, 8, 3]
    cls = _tolist(classes)
    d = ImageDraw.Draw(views.bev)
    cols = [_rgb(color, CLASS_COLORS.get(_class_name(c, names), (255, 255, 255))) for c in cls]
    for k in range(boxes.shape[0]):
        foot = [views.bev_px(float(x), float(y)) for x, y in corners[k, :4, :2].tolist()]
        if dashed:
            _dashed(d, [*foot, foot[0]], cols[k], 1, dash=3)
            _dashed(d, [foot[0], foot[1]], cols[k], 3, dash=3)
        else:
            d.polygon(foot, outline=cols[k])
            d.line([foot[0], foot[1]], fill=cols[k], width=3)
    if not cameras:
        return
    for i in range(len(views.camera_names)):
        dc = ImageDraw.Draw(views.cameras[i])
        T = invert_transform(views.T_ego_from_cam[i])
        pc = transform_points(T, corners.reshape(-1, 3)).reshape(-1, 8, 3)
        for k in range(boxes.shape[0]):
            if bool((pc[k, :, 2] <= 0.1).all()):
                continue
            for a, b in _box_edges():
                seg = _clip_segment(pc[k, a], pc[k, b], views, i)
                if seg is not None and dashed:
                    _dashed(dc, list(seg), cols[k], max(1, int(views.scale // 2 + 1)))
                elif seg is not None:
                    dc.line(seg, fill=cols[k], width=max(1, int(views.scale // 2 + 1)))


def _clip_segment(pa: Tensor, pb: Tensor, views: Views, cam: int, near: float = 0.1):
    za, zb = float(pa[2]), float(pb[2])
    if za < near and zb < near:
        return None
    if za < near:
        pa = pa + (pb - pa) * (near - za) / (zb - za)
    elif zb < near:
        pb = pb + (pa - pb) * (near - zb) / (za - zb)
    K = views.intrinsics[cam]

    def px(p: Tensor) -> tuple[float, float]:
        return (float((K[0, 0] * p[0] / p[2] + K[0, 2]) * views.scale),
                float((K[1, 1] * p[1] / p[2] + K[1, 2]) * views.scale))

    return [px(pa), px(pb)]


def draw_bev_map(views: Views, bev: Tensor, classes: Sequence[str] = BEV_CLASSES, alpha: float = 0.6,
                 colors: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Blend a BEV map ``[C, R, C']`` (bool or probabilities) on the panel, one colour per class;
    later channels are drawn over earlier ones."""
    colors = colors or BEV_COLORS
    m = torch.as_tensor(bev).detach().float().cpu()
    size = (views.bev.height, views.bev.width)
    base = torch.from_numpy(np.asarray(views.bev).copy()).float()
    for c, name in enumerate(classes):
        a = torch.nn.functional.interpolate(m[c][None, None], size=size, mode="nearest")[0, 0].clamp(0, 1) * alpha
        col = torch.tensor(colors.get(name, (255, 255, 255)), dtype=torch.float32)
        base = base * (1 - a[..., None]) + col * a[..., None]
    views.bev = Image.fromarray(base.round().clamp(0, 255).to(torch.uint8).numpy())
    views._draw_frustums(ImageDraw.Draw(views.bev))


def draw_polylines_bev(views: Views, points: Tensor, color: Color | Sequence[Color], width: int = 2,
                       cameras: bool = False) -> None:
    """Ego-frame polylines ``[L, P, 3]`` in the BEV panel (and projected into cameras if asked).
    ``color`` is one colour or one per line."""
    pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, points.shape[-2], 3) if len(points) else None
    if pts is None:
        return
    many = isinstance(color, list | tuple) and len(color) == len(pts) and not isinstance(color[0], int)
    cols = [_rgb(color[k] if many else color, (255, 255, 255)) for k in range(len(pts))]  # type: ignore[index]
    d = ImageDraw.Draw(views.bev)
    for k, line in enumerate(pts):
        d.line([views.bev_px(float(x), float(y)) for x, y, _ in line.tolist()], fill=cols[k], width=width)
    if not cameras:
        return
    for i in range(len(views.camera_names)):
        dc = ImageDraw.Draw(views.cameras[i])
        T = invert_transform(views.T_ego_from_cam[i])
        for k, line in enumerate(pts):
            pc = transform_points(T, line)
            for a in range(len(pc) - 1):
                seg = _clip_segment(pc[a], pc[a + 1], views, i, near=0.5)
                if seg is not None:
                    dc.line(seg, fill=cols[k], width=1)


def draw_traffic_lights(views: Views, boxes: Tensor, camera: Tensor | Sequence[int], state: Tensor | Sequence[int],
                        lane: Tensor | Sequence[int] | None = None, scores: Tensor | Sequence[float] | None = None,
                        dashed: bool = False) -> None:
    """Light boxes coloured by state (``LIGHT_STATES`` index or name), with the governed lane; ``dashed``
    (ground truth) labels sit left of the box, predictions' right of it."""
    font = _font(max(11, round(views.scale * 6)))
    lanes, sc = _tolist(lane), _tolist(scores)
    for k, (box, cam, st) in enumerate(zip(_tolist(boxes), _tolist(camera), _tolist(state), strict=True)):
        name = _class_name(st, LIGHT_STATES)
        col = LIGHT_COLORS.get(name, (255, 255, 255))
        x1, y1, x2, y2 = (v * views.scale for v in box)
        ci = views.camera_index(cam)
        d = ImageDraw.Draw(views.cameras[ci])
        _rect(d, [x1 - 1, y1 - 1, x2, y2], col, max(1, round(views.scale)), dashed)
        text = name + (f" L{lanes[k]:+d}" if lanes else "") + (f" {sc[k]:.2f}" if sc else "")
        tw, size = d.textlength(text, font=font), getattr(font, "size", 10)
        x = max(0.0, x1 - 4 - tw) if dashed else x2 + 3
        at = views.place_label(ci, x, y1, tw, size + 1, size + 2)
        if at is not None:
            d.text(at, text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))


def depth_color(z: Tensor, near: float = 2.0, far: float = 60.0) -> list[tuple[int, int, int]]:
    """Log-depth ramp: red (near) → yellow → green → blue (far), one colour per depth in metres."""
    f = ((z.clamp(near, far).log() - math.log(near)) / (math.log(far) - math.log(near))).tolist()
    stops = [(255, 40, 40), (255, 220, 0), (40, 230, 90), (40, 120, 255)]
    out = []
    for t in f:
        x = t * (len(stops) - 1)
        k = min(int(x), len(stops) - 2)
        a, b, r = stops[k], stops[k + 1], x - k
        out.append(tuple(round(a[j] + (b[j] - a[j]) * r) for j in range(3)))
    return out


def draw_sparse_depth(views: Views, depth: Tensor, max_points: int = 40000) -> None:
    """Sparse z-depth ``[N, H, W]`` (0 = no return, e.g. projected lidar): a dot per return in its
    camera and, unprojected into the ego frame, in the BEV panel; colour = depth (``depth_color``)."""
    depth = depth.detach().float().cpu()
    bev = ImageDraw.Draw(views.bev)
    for i in range(depth.shape[0]):
        v, u = torch.nonzero(depth[i] > 0, as_tuple=True)
        if len(v) > max_points:  # even subsample: the picture stays readable and fast
            keep = torch.linspace(0, len(v) - 1, max_points).long()
            v, u = v[keep], u[keep]
        z = depth[i, v, u]
        colors = depth_color(z)
        dc = ImageDraw.Draw(views.cameras[i])
        s = views.scale
        for uu, vv, c in zip(((u.float() + 0.5) * s).tolist(), ((v.float() + 0.5) * s).tolist(), colors, strict=True):
            dc.rectangle([uu - 1, vv - 1, uu, vv], fill=c)
        K = views.intrinsics[i]
        x = ((u.float() + 0.5) - K[0, 2]) / K[0, 0] * z
        y = ((v.float() + 0.5) - K[1, 2]) / K[1, 1] * z
        ego = transform_points(views.T_ego_from_cam[i], torch.stack([x, y, z], 1))
        for (px, py), c in zip(ego[:, :2].tolist(), colors, strict=True):
            bu, bv = views.bev_px(px, py)
            if 0 <= bu < views.bev.width and 0 <= bv < views.bev.height:
                bev.point((bu, bv), fill=c)
