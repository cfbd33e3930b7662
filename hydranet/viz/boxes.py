"""Drawing objects onto a ``Canvas``: 2D boxes and traffic lights in the cameras, 3D boxes as BEV footprints
and camera wireframes, labelled with class (+ score). Ground truth is dashed, predictions solid, in the
class colours of ``style.py``.

Coordinates: 2D boxes are in the *stored* image resolution (``views.image_hw``), scaled here to the drawn
size; 3D boxes are ego-frame ``[M, 7]`` (x, y, z, l, w, h, yaw; metres, radians; x forward, y left);
cameras are OpenCV (x right, y down, z forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import ImageDraw
from torch import Tensor

from hydranet.data import LIGHT_STATES
from hydranet.geometry import box_corners, invert_transform, transform_points
from hydranet.setup import OBJECT_CLASSES
from hydranet.viz.canvas import Canvas
from hydranet.viz.style import (
    LIGHT_COLORS,
    Color,
    as_list,
    class_color,
    class_label,
    dashed_polyline,
    draw_rect,
    label_font,
    line_style,
    resolve_color,
)


def _label(views: Canvas, cam: int, d: ImageDraw.ImageDraw, box: list[float], text: str, col: Any, font: Any,
           below: bool, height: int) -> None:
    """Class label above a prediction's box, below a ground-truth box (a matched pair's labels never meet),
    moved away from labels already drawn, or left out where there is no room."""
    size = getattr(font, "size", 10)
    x1, y1, _, y2 = box
    y = min(y2 + 2, height - size - 2) if below else max(0, y1 - size - 2)
    at = views.place_label(cam, x1 + 2, y, d.textlength(text, font=font), size + 1, (size + 2) * (1 if below else -1))
    if at is not None:
        d.text(at, text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))


def draw_boxes2d(views: Canvas, boxes: Tensor, camera: Tensor | Sequence[int], classes: Tensor | Sequence[int],
                 color: Color | None = None, scores: Tensor | Sequence[float] | None = None,
                 names: Sequence[str] = OBJECT_CLASSES, dashed: bool = False) -> None:
    """Per-camera 2D boxes (x1, y1, x2, y2 in stored-image pixels), labelled with class (+ score), in the
    class colour; ``dashed`` for ground truth (label below the box), solid for predictions (label above)."""
    font = label_font(max(11, round(views.scale * 6)))
    sc = as_list(scores)
    for k, (box, cam, cls) in enumerate(zip(as_list(boxes), as_list(camera), as_list(classes), strict=True)):
        name = class_label(cls, names)
        col = resolve_color(color, class_color(name))
        views.legend_entry(name, col, outline=line_style(dashed))
        x1, y1, x2, y2 = (v * views.scale for v in box)
        ci = views.camera_index(cam)
        img = views.cameras[ci]
        d = ImageDraw.Draw(img)
        rect = [x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)]
        draw_rect(d, rect, col, max(1, round(views.scale)), dashed)
        _label(views, ci, d, rect, name if not sc else f"{name} {sc[k]:.2f}", col, font, dashed, img.height)


def _box_edges() -> list[tuple[int, int]]:
    return [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def draw_boxes3d(views: Canvas, boxes: Tensor, classes: Tensor | Sequence[int | str], color: Color | None = None,
                 cameras: bool = True, names: Sequence[str] = OBJECT_CLASSES, dashed: bool = False) -> None:
    """Ego-frame boxes ``[M, 7]``: footprints in the BEV panel (front edge thicker) and wireframes
    projected into every camera (edges clipped at the camera plane); class colours, ``dashed`` for
    ground truth."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 7)
    if boxes.shape[0] == 0:
        return
    corners = box_corners(boxes)  # [M, 8, 3]
    cls = as_list(classes)
    d = ImageDraw.Draw(views.bev)
    cols = [resolve_color(color, class_color(class_label(c, names))) for c in cls]
    for c, col in zip(cls, cols, strict=True):
        if class_label(c, names) != "ego":  # the ego box is the panel's reference, not a class
            views.legend_entry(class_label(c, names), col, outline=line_style(dashed))
    for k in range(boxes.shape[0]):
        foot = [views.bev_px(float(x), float(y)) for x, y in corners[k, :4, :2].tolist()]
        if dashed:
            dashed_polyline(d, [*foot, foot[0]], cols[k], 1, dash=3)
            dashed_polyline(d, [foot[0], foot[1]], cols[k], 3, dash=3)
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
                seg = clip_segment(pc[k, a], pc[k, b], views, i)
                if seg is not None and dashed:
                    dashed_polyline(dc, list(seg), cols[k], max(1, int(views.scale // 2 + 1)))
                elif seg is not None:
                    dc.line(seg, fill=cols[k], width=max(1, int(views.scale // 2 + 1)))


def clip_segment(pa: Tensor, pb: Tensor, views: Canvas, cam: int, near: float = 0.1):
    """The part of camera-frame segment ``pa``-``pb`` (metres, OpenCV) in front of the ``near`` plane, projected to
    ``cam``'s drawn pixels: ``((u, v), (u, v))``, or None when all of it is behind."""
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


def draw_traffic_lights(views: Canvas, boxes: Tensor, camera: Tensor | Sequence[int], state: Tensor | Sequence[int],
                        lane: Tensor | Sequence[int] | None = None, scores: Tensor | Sequence[float] | None = None,
                        dashed: bool = False) -> None:
    """Light boxes coloured by state (``LIGHT_STATES`` index or name), with the governed lane; ``dashed``
    (ground truth) labels sit left of the box, predictions' right of it."""
    font = label_font(max(11, round(views.scale * 6)))
    lanes, sc = as_list(lane), as_list(scores)
    for k, (box, cam, st) in enumerate(zip(as_list(boxes), as_list(camera), as_list(state), strict=True)):
        name = class_label(st, LIGHT_STATES)
        col = LIGHT_COLORS.get(name, (255, 255, 255))
        views.legend_entry(f"{name} light", col, outline=line_style(dashed))
        x1, y1, x2, y2 = (v * views.scale for v in box)
        ci = views.camera_index(cam)
        d = ImageDraw.Draw(views.cameras[ci])
        draw_rect(d, [x1 - 1, y1 - 1, x2, y2], col, max(1, round(views.scale)), dashed)
        text = name + (f" L{lanes[k]:+d}" if lanes else "") + (f" {sc[k]:.2f}" if sc else "")
        tw, size = d.textlength(text, font=font), getattr(font, "size", 10)
        x = max(0.0, x1 - 4 - tw) if dashed else x2 + 3
        at = views.place_label(ci, x, y1, tw, size + 1, size + 2)
        if at is not None:
            d.text(at, text, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))


