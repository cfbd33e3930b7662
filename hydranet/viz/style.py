"""The drawing style every picture shares: class, BEV, light and lane colours, the camera layouts of the
composed picture, the label font, and the line primitives (dashed for ground truth, solid for predictions).
PIL only, default font."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PIL import ImageColor, ImageDraw, ImageFont
from torch import Tensor

from hydranet.data.sample import OBJECT_CLASSES

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
        return ImageColor.getrgb(color)[:3]
    return tuple(int(c) for c in color)[:3]  # type: ignore[return-value]


def _class_name(c: int | str, names: Sequence[str] = OBJECT_CLASSES) -> str:
    if isinstance(c, str):
        return c
    return names[int(c)] if 0 <= int(c) < len(names) else str(int(c))


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


