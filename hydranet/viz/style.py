"""The drawing style every picture shares: class, BEV, light and lane colours, the label font, and the
line primitives (dashed for ground truth, solid for predictions). PIL only, default font."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

from PIL import ImageColor, ImageDraw, ImageFont
from torch import Tensor

from hydranet.setup import OBJECT_CLASSES

Color = tuple[int, int, int] | str

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "car": (0, 200, 255), "truck": (255, 140, 0), "pedestrian": (255, 40, 200), "cone": (255, 230, 0),
    "traffic_light": (120, 255, 120),
    # nuScenes' other detection classes (hydranet.setup.NUSCENES_CLASSES), each its own colour in a legend.
    "bus": (40, 90, 255), "trailer": (255, 110, 110), "construction_vehicle": (150, 80, 20),
    "motorcycle": (0, 255, 170), "bicycle": (160, 220, 255), "traffic_cone": (255, 230, 0), "barrier": (150, 150, 150),
}
# Classes of a user's own vocabulary: a colour from this palette chosen by the name's CRC-32, so a class keeps
# its colour in every picture and run (Python's hash() is salted per process).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)

# Series of a chart on a white background (report charts, the vacation history), in order: ten colours told
# apart at a glance (matplotlib's "tab10"), none pale, none repeated below ten series.
SERIES_COLORS: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                  "#7f7f7f", "#bcbd22", "#17becf")

# The two line styles of boxes, in legend order: predictions solid, ground truth dashed.
LINE_STYLES: tuple[str, str] = ("prediction", "ground truth")


def line_style(dashed: bool) -> str:
    """The legend name of a box's line style: ``"ground truth"`` when ``dashed``, else ``"prediction"``."""
    return LINE_STYLES[1] if dashed else LINE_STYLES[0]


def class_color(name: str) -> tuple[int, int, int]:
    """The RGB colour of object class ``name``: ``CLASS_COLORS`` for the world's and nuScenes' classes, else
    a fixed palette colour chosen by the name (the same in every picture)."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]
BEV_COLORS: dict[str, tuple[int, int, int]] = {
    "drivable": (90, 90, 110), "lane_marking": (250, 250, 250), "sidewalk": (150, 120, 90),
    "vehicle": (0, 200, 255), "pedestrian": (255, 40, 200), "cone": (255, 230, 0),
}
LIGHT_COLORS: dict[str, tuple[int, int, int]] = {"red": (255, 40, 40), "yellow": (255, 210, 0),
                                                 "green": (40, 255, 90)}
# One lane palette everywhere (labels, predictions, world pictures): dashed white, solid pink, road edge olive. Each
# the colour of largest smallest CIE76 distance to every class, light, region and path colour: the yellow, cyan and
# red they had were a cone's and a yellow light's, a car's, and a red light's.
LANE_COLORS: dict[int, tuple[int, int, int]] = {1: (255, 255, 255), 2: (255, 165, 225), 3: (120, 150, 30)}
_LANE_OTHER_COLOR: tuple[int, int, int] = (128, 128, 128)  # a lane line of a kind outside LANE_COLORS
DRIVABLE_COLOR: tuple[int, int, int] = (60, 150, 255)
# The ego's planned path in the BEV: violet, a colour no lane kind, class or BEV map uses.
EGO_PATH_COLOR: tuple[int, int, int] = (170, 110, 255)
# One depth scale for every picture (dense prediction, dense label, lidar dots): log ramp, metres.
DEPTH_RANGE: tuple[float, float] = (2.0, 80.0)
DEPTH_TICKS: tuple[float, ...] = (2, 5, 10, 20, 40, 80)
# Dense overlays are alpha-blended over the camera image, which must stay readable under them (lanes at
# 0.8 over drivable and depth at 0.3-0.45 left ~8 % of the photo: a picture of colours). Thin lane strokes
# need more colour than large regions; the BEV fill lets the boxes drawn under it show through.
REGION_ALPHA = 0.35  # drivable space, depth bands: large areas
LANE_ALPHA = 0.55  # lane markings: thin strokes
BEV_FILL_ALPHA = 0.45  # BEV semantic prediction, filled per class
# However many masks stack up on a camera pixel (predict draws every task on one picture), the photo keeps
# at least this share of it; the overlays share the rest in proportion (``Views.blend``).
MIN_IMAGE_SHARE = 0.45
# Prediction and ground truth share the class colours; ground truth is drawn dashed, predictions solid.
DASH = 4


def lane_color(kind: int) -> tuple[int, int, int]:
    """The RGB colour of lane kind ``kind`` (``LANE_COLORS``; grey for a kind it lacks)."""
    return LANE_COLORS.get(int(kind), _LANE_OTHER_COLOR)


def legend_name(color: tuple[int, int, int]) -> str | None:
    """What a region of ``color`` means in the legend (drivable, a lane kind), or None: lets ``draw_mask``
    name what it draws without every caller saying it twice."""
    if tuple(color) == DRIVABLE_COLOR:
        return "drivable"
    kinds = {1: "lane dashed", 2: "lane solid", 3: "road edge"}
    return next((kinds[k] for k, c in LANE_COLORS.items() if tuple(color) == c), None)

def label_font(size: int) -> ImageFont.ImageFont:
    """PIL's default font at ``size`` px (a fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, fixed size
        return ImageFont.load_default()


def resolve_color(color: Color | None, fallback: tuple[int, int, int]) -> tuple[int, int, int]:
    """``color`` (an RGB tuple or a PIL colour name) as 0-255 RGB; ``fallback`` when it is None."""
    if color is None:
        return fallback
    if isinstance(color, str):
        return ImageColor.getrgb(color)[:3]
    return tuple(int(c) for c in color)[:3]  # type: ignore[return-value]


def class_label(c: int | str, names: Sequence[str] = OBJECT_CLASSES) -> str:
    """The name of class index ``c`` in ``names`` (a name passes through; an index outside them is its number)."""
    if isinstance(c, str):
        return c
    return names[int(c)] if 0 <= int(c) < len(names) else str(int(c))


def as_list(x: Any) -> list:
    """A tensor, sequence or None as a plain Python list ([] for None)."""
    if x is None:
        return []
    if isinstance(x, Tensor):
        return x.detach().cpu().tolist()
    return list(x)


def dashed_polyline(d: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: Any, width: int,
                    dash: int = DASH) -> None:
    """A dashed polyline (ground truth): ``dash`` px on, ``dash`` px off."""
    for (xa, ya), (xb, yb) in zip(points[:-1], points[1:], strict=True):
        length = math.hypot(xb - xa, yb - ya)
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            d.line([(xa + (xb - xa) * t0, ya + (yb - ya) * t0), (xa + (xb - xa) * t1, ya + (yb - ya) * t1)],
                   fill=fill, width=width)


def draw_rect(d: ImageDraw.ImageDraw, box: list[float], col: Any, width: int, dashed: bool) -> None:
    """The outline of pixel box ``(x1, y1, x2, y2)``: dashed (ground truth) or solid (prediction)."""
    x1, y1, x2, y2 = box
    if dashed:
        dashed_polyline(d, [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)], col, width)
    else:
        d.rectangle([x1, y1, x2, y2], outline=col, width=width)


