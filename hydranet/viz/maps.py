"""Drawing maps and lines onto a ``Canvas``: per-camera masks (drivable, lanes, depth), BEV maps, ego-frame
polylines (lanes, paths) in the BEV panel and the cameras, and sparse depth (projected lidar).

Coordinates: camera masks may have any resolution (resized to the drawn size); BEV maps are ``BevGrid``
tensors; polylines are ego metres (x forward, y left, z up); depth is z in metres along the OpenCV
camera axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from hydranet.data import BEV_CLASSES
from hydranet.geometry import invert_transform, transform_points
from hydranet.viz.boxes import clip_segment
from hydranet.viz.canvas import Canvas
from hydranet.viz.style import (
    BEV_COLORS,
    BEV_FILL_ALPHA,
    DEPTH_RANGE,
    LANE_ALPHA,
    LANE_COLORS,
    REGION_ALPHA,
    Color,
    legend_name,
    resolve_color,
)


def draw_mask(views: Canvas, masks: Tensor, color: Color, alpha: float = REGION_ALPHA, name: str | None = None) -> None:
    """Blend per-camera masks ``[N, H, W]`` (bool, 0/1 or probabilities) of any resolution; the camera image
    keeps at least ``MIN_IMAGE_SHARE`` of every pixel however many masks are stacked (``Canvas.blend``).
    ``name`` is its legend entry (default: the name ``style.legend_name`` gives the colour, if any)."""
    rgb = resolve_color(color, (255, 0, 0))
    col = torch.tensor(rgb, dtype=torch.float32)
    m = masks.detach().float().cpu()
    if bool((m > 0.5).any()):
        views.legend_entry(name or legend_name(rgb), rgb)
    for i, img in enumerate(views.cameras):
        a = torch.nn.functional.interpolate(m[i][None, None], size=(img.height, img.width), mode="bilinear",
                                            align_corners=False).clamp(0, 1)
        if views.truth_over_predictions:
            # Only the mask's edge, opaque in the class colour: the prediction's blended fill stays visible inside
            # it, and where the two disagree the edge runs apart from the fill's.
            views.note(_GROUND_TRUTH_MASKS)
            inside = (a > 0.5).float()
            edge = (inside - -torch.nn.functional.max_pool2d(-inside, 3, 1, 1))[0, 0].bool().numpy()
            pixels = np.asarray(img).copy()
            pixels[edge] = rgb
            views.cameras[i] = Image.fromarray(pixels)
            continue
        views.blend(i, a[0, 0] * alpha, col)


# Footer notes of a picture with ground truth over predictions (``Canvas.truth_over_predictions``), where the
# truth is not a dashed box the legend's line styles explain.
_GROUND_TRUTH_MASKS = "ground truth: mask outlines in the class colour (the filled areas are the prediction)"
_GROUND_TRUTH_DEPTH = "ground truth depth: dots on the same scale (the filled map is the prediction)"
GROUND_TRUTH_BEV = "BEV ground truth: class-coloured outlines (the filled areas are the prediction)"


def draw_lane_masks(views: Canvas, lanes: Tensor, alpha: float = LANE_ALPHA) -> None:
    """The ``lanes`` label/prediction (0 none, 1 dashed, 2 solid, 3 road edge) in one colour per kind."""
    for kind, col in LANE_COLORS.items():
        if bool((lanes == kind).any()):
            draw_mask(views, lanes == kind, col, alpha)


def draw_bev_map(views: Canvas, bev: Tensor, classes: Sequence[str] = BEV_CLASSES, alpha: float = BEV_FILL_ALPHA,
                 colors: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Blend a BEV map ``[C, R, C']`` (bool or probabilities) on the panel, one colour per class;
    later channels are drawn over earlier ones."""
    colors = colors or BEV_COLORS
    m = torch.as_tensor(bev).detach().float().cpu()
    for c, name in enumerate(classes):
        if bool((m[c] > 0.5).any()):
            views.legend_entry(f"BEV {name}", colors.get(name, (255, 255, 255)))
    size = (views.bev.height, views.bev.width)
    base = torch.from_numpy(np.asarray(views.bev).copy()).float()
    for c, name in enumerate(classes):
        a = torch.nn.functional.interpolate(m[c][None, None], size=size, mode="nearest")[0, 0].clamp(0, 1) * alpha
        col = torch.tensor(colors.get(name, (255, 255, 255)), dtype=torch.float32)
        base = base * (1 - a[..., None]) + col * a[..., None]
    views.bev = Image.fromarray(base.round().clamp(0, 255).to(torch.uint8).numpy())
    views.draw_frustums(ImageDraw.Draw(views.bev))


def draw_polylines_bev(views: Canvas, points: Tensor, color: Color | Sequence[Color], width: int = 2,
                       cameras: bool = False, name: str | None = None) -> None:
    """Ego-frame polylines ``[L, P, 3]`` in the BEV panel (and projected into cameras if asked).
    ``color`` is one colour or one per line; ``name`` the legend entry (default: ``style.legend_name``)."""
    pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, points.shape[-2], 3) if len(points) else None
    if pts is None:
        return
    many = isinstance(color, list | tuple) and len(color) == len(pts) and not isinstance(color[0], int)
    cols = [resolve_color(color[k] if many else color, (255, 255, 255)) for k in range(len(pts))]  # type: ignore[index]
    for c in dict.fromkeys(cols):
        views.legend_entry(name if name and not many else legend_name(c), c)
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
                seg = clip_segment(pc[a], pc[a + 1], views, i, near=0.5)
                if seg is not None:
                    dc.line(seg, fill=cols[k], width=1)


_DEPTH_STOPS = torch.tensor([(255, 40, 40), (255, 220, 0), (40, 230, 90), (40, 120, 255)], dtype=torch.float32)


def depth_rgb(z: Tensor, near: float = DEPTH_RANGE[0], far: float = DEPTH_RANGE[1]) -> Tensor:
    """Log-depth ramp, red (near) → yellow → green → blue (far): float RGB ``[..., 3]`` in 0..255 for depths
    ``z`` ``[...]`` in metres, clamped to [near, far]. Every depth picture uses it (``DEPTH_RANGE``) with the
    colour bar ``Views`` draws, so prediction, label and lidar read on one scale."""
    f = (z.float().clamp(near, far).log() - math.log(near)) / (math.log(far) - math.log(near))
    x = f * (len(_DEPTH_STOPS) - 1)
    k = x.floor().clamp(max=len(_DEPTH_STOPS) - 2).long()
    r = (x - k)[..., None]
    return _DEPTH_STOPS[k] + (_DEPTH_STOPS[k + 1] - _DEPTH_STOPS[k]) * r


def depth_color(z: Tensor, near: float = DEPTH_RANGE[0], far: float = DEPTH_RANGE[1]) -> list[tuple[int, int, int]]:
    """``depth_rgb`` as one RGB tuple per depth in metres (for drawing dots)."""
    return [tuple(c) for c in depth_rgb(z.reshape(-1), near, far).round().to(torch.uint8).tolist()]


def draw_depth(views: Canvas, depth: Tensor, alpha: float = 0.6, label: str = "depth (m)") -> None:
    """Dense z-depth ``[N, H, W]`` in metres (0 = no depth, e.g. sky: left clear) over the cameras on the
    ``depth_rgb`` scale, with the colour bar in the legend; prediction and label share the scale."""
    depth = depth.detach().float().cpu()
    for i, img in enumerate(views.cameras):
        z = torch.nn.functional.interpolate(depth[i][None, None], size=(img.height, img.width), mode="nearest")[0, 0]
        if views.truth_over_predictions:  # a grid of dots on the same scale, over the predicted depth
            views.note(_GROUND_TRUTH_DEPTH)
            d = ImageDraw.Draw(img)
            step = max(12, round(8 * views.scale))
            for v in range(step // 2, img.height, step):
                for u in range(step // 2, img.width, step):
                    if float(z[v, u]) > 0:
                        d.rectangle([u - 1, v - 1, u + 1, v + 1], fill=depth_color(z[v, u:u + 1])[0],
                                    outline=(0, 0, 0))
            continue
        views.blend(i, (z > 0).float() * alpha, depth_rgb(z))
    views.colorbar = label


def draw_sparse_depth(views: Canvas, depth: Tensor, max_points: int = 40000) -> None:
    """Sparse z-depth ``[N, H, W]`` (0 = no return, e.g. projected lidar): a dot per return in its
    camera and, unprojected into the ego frame, in the BEV panel; colour = depth (``depth_color``), with
    the colour bar in metres in the legend."""
    depth = depth.detach().float().cpu()
    views.colorbar = "lidar depth (m)"
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
