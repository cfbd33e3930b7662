"""Drawing maps and lines onto a ``Views``: per-camera masks (drivable, lanes, depth), BEV maps, ego-frame
polylines (lanes, paths) in the BEV panel and the cameras, and sparse depth (projected lidar).

Coordinates: camera masks may have any resolution (resized to the drawn size); BEV maps are ``BevGrid``
tensors; polylines are ego metres (x forward, y left, z up); depth is z in metres along the OpenCV
camera axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from hydranet.data.sample import BEV_CLASSES
from hydranet.geometry import invert_transform, transform_points
from hydranet.viz.boxes import _clip_segment
from hydranet.viz.style import BEV_COLORS, BEV_FILL_ALPHA, LANE_ALPHA, LANE_COLORS, REGION_ALPHA, Color, _rgb

if TYPE_CHECKING:  # annotations only: views.py imports the drawing modules
    from hydranet.viz.views import Views


def draw_mask(views: Views, masks: Tensor, color: Color, alpha: float = REGION_ALPHA) -> None:
    """Blend per-camera masks ``[N, H, W]`` (bool, 0/1 or probabilities) of any resolution; the camera image
    keeps at least ``MIN_IMAGE_SHARE`` of every pixel however many masks are stacked (``Views.blend``)."""
    col = torch.tensor(_rgb(color, (255, 0, 0)), dtype=torch.float32)
    m = masks.detach().float().cpu()
    for i, img in enumerate(views.cameras):
        a = torch.nn.functional.interpolate(m[i][None, None], size=(img.height, img.width), mode="bilinear",
                                            align_corners=False)[0, 0].clamp(0, 1) * alpha
        views.blend(i, a, col)


def draw_lane_masks(views: Views, lanes: Tensor, alpha: float = LANE_ALPHA) -> None:
    """The ``lanes`` label/prediction (0 none, 1 dashed, 2 solid, 3 road edge) in one colour per kind."""
    for kind, col in LANE_COLORS.items():
        draw_mask(views, lanes == kind, col, alpha)


def draw_bev_map(views: Views, bev: Tensor, classes: Sequence[str] = BEV_CLASSES, alpha: float = BEV_FILL_ALPHA,
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
