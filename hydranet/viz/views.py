"""``Views``: the canvases one sample is drawn on (one PIL image per camera, upscaled, and a BEV panel),
their geometry (ego point -> BEV pixel, ego points -> camera pixels) and the composed picture: cameras
laid out as on the car, the BEV panel beside them, a legend and notes below."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from hydranet.data.sample import Batch, Sample
from hydranet.geometry import BevGrid, invert_transform, transform_points
from hydranet.viz.boxes import draw_boxes3d
from hydranet.viz.maps import depth_rgb
from hydranet.viz.style import DEPTH_RANGE, DEPTH_TICKS, MIN_IMAGE_SHARE, _dashed, _font

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
        self._photos = [im.copy() for im in self.cameras]  # the untouched images, for ``blend``'s floor
        self._image_share: list[Tensor | None] = [None] * n  # per camera pixel: the photo's share left
        size = bev_size or round(2 * h * scale)
        self.bev_ppm = size / max(grid.x_range[1] - grid.x_range[0], grid.y_range[1] - grid.y_range[0])
        self.bev = Image.new("RGB", (round((grid.y_range[1] - grid.y_range[0]) * self.bev_ppm),
                                     round((grid.x_range[1] - grid.x_range[0]) * self.bev_ppm)), (24, 26, 30))
        self.notes: list[str] = []  # e.g. "detection2d: 0 detections", written under the picture
        self.legend_styles = ("prediction", "ground truth")  # line styles the legend lists: what is drawn
        self.legend: dict[str, tuple[int, int, int]] = {}  # what the draw_* calls drew: name -> colour
        self.colorbar: str | None = None  # a depth scale was drawn: the colour bar's title ("depth (m)")
        self.outlines = False  # boxes were drawn: the legend shows the line styles (solid, dashed)
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

    def legend_entry(self, name: str | None, color: tuple[int, int, int], outline: bool = False) -> None:
        """Record that something named ``name`` was drawn in ``color``: the legend lists exactly these
        (first colour wins); ``None`` is ignored. ``outline``: a box, whose line style (prediction solid,
        ground truth dashed) the legend then explains."""
        self.outlines |= outline
        if name:
            self.legend.setdefault(name, tuple(int(c) for c in color))  # type: ignore[arg-type]

    def note(self, text: str) -> None:
        """A line of text for the picture's footer (what a head found nothing of, ...)."""
        if text not in self.notes:
            self.notes.append(text)

    def blend(self, camera: int, alpha: Tensor, color: Tensor) -> None:
        """Blend ``color`` (float RGB ``[3]``) over camera ``camera`` with per-pixel ``alpha`` ``[H, W]`` in [0, 1]
        (the drawn size), keeping at least ``MIN_IMAGE_SHARE`` of the camera image in every pixel: where stacked
        masks would bury it, the overlays (this one and earlier ones, in proportion) are scaled down to
        ``1 - MIN_IMAGE_SHARE`` and the image restored to its floor."""
        img = self.cameras[camera]
        base = torch.from_numpy(np.asarray(img).copy()).float()
        out = base * (1 - alpha[..., None]) + color * alpha[..., None]
        share = self._image_share[camera]
        share = (torch.ones(alpha.shape) if share is None else share) * (1 - alpha)
        low = share < MIN_IMAGE_SHARE
        if bool(low.any()):
            photo = torch.from_numpy(np.asarray(self._photos[camera]).copy()).float()
            k = ((1 - MIN_IMAGE_SHARE) / (1 - share)).clamp(max=1.0)[..., None]  # low pixels: share < floor < 1
            floored = photo * MIN_IMAGE_SHARE + (out - photo * share[..., None]) * k
            out = torch.where(low[..., None], floored, out)
            share = torch.where(low, torch.full_like(share, MIN_IMAGE_SHARE), share)
        self._image_share[camera] = share
        self.cameras[camera] = Image.fromarray(out.round().clamp(0, 255).to(torch.uint8).numpy())

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_sample(cls, sample: Sample, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Views:
        """Canvases for one ``Sample``: its uint8 images ``[N, 3, H, W]``, K and T_ego_from_cam, drawn ``scale``
        times larger, beside a BEV panel of ``grid`` (``bev_size`` px high; default twice the camera height)."""
        return cls(sample.images, sample.intrinsics, sample.T_ego_from_cam, sample.camera_names, grid, scale, bev_size)

    @classmethod
    def from_batch(cls, batch: Batch, i: int, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Views:
        """Canvases for frame ``i`` of a collated ``Batch`` (as ``from_sample``)."""
        return cls(batch.images[i], batch.intrinsics[i], batch.T_ego_from_cam[i], batch.camera_names, grid, scale,
                   bev_size)

    # ---- geometry --------------------------------------------------------------------------
    def bev_px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel (u, v) in the BEV panel of ego point (x, y) metres (car drives up the page)."""
        return (self.grid.y_range[1] - y) * self.bev_ppm, (self.grid.x_range[1] - x) * self.bev_ppm

    def camera_index(self, camera: int | str) -> int:
        """Rig index of ``camera`` (an index, or a name in ``camera_names``; ``ValueError`` for an unknown name)."""
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
        """The ego car's footprint (``EGO_BOX``, ego frame) in white on the BEV panel; ``compose`` calls it."""
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
        """The legend below the cameras: the line styles of ``legend_styles``, a swatch per thing drawn
        (``legend``, wrapped to ``width``), the depth colour bar in metres when a depth was drawn, then the
        notes; returns the number of legend rows."""
        x0, rows = x, 1
        styles = self.legend_styles if self.outlines else ()
        swatches = [*((s, None) for s in styles), *self.legend.items()]
        if not swatches:  # nothing drawn: no empty legend row (the notes, if any, move up)
            rows, y = 0, y - line_h
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
        if self.colorbar:
            y, rows = y + line_h, rows + 2
            self._colorbar(d, font, x0, y, line_h, min(width - 2 * x0, 520))
            y += line_h
        for k, text in enumerate(self.notes):
            d.text((8, y + line_h * (k + 1)), text, fill=(255, 200, 120), font=font)
        return rows

    def _colorbar(self, d: ImageDraw.ImageDraw, font: Any, x: int, y: int, line_h: int, length: int) -> None:
        """``colorbar``'s title, then the ``DEPTH_RANGE`` log ramp with ticks in metres (two legend rows)."""
        near, far = DEPTH_RANGE
        title = f"{self.colorbar}:"
        d.text((x, y), title, fill=(230, 230, 230), font=font)
        x0 = x + round(d.textlength(title, font=font)) + 10
        z = torch.exp(torch.linspace(math.log(near), math.log(far), length))
        rgb = depth_rgb(z).round().to(torch.uint8).tolist()
        for k, c in enumerate(rgb):
            d.line([(x0 + k, y + 3), (x0 + k, y + line_h - 3)], fill=tuple(c))
        for t in DEPTH_TICKS:
            u = x0 + (length - 1) * (math.log(t) - math.log(near)) / (math.log(far) - math.log(near))
            d.line([(u, y + line_h - 3), (u, y + line_h + 2)], fill=(230, 230, 230))
            label = f"{t:g}"
            d.text((u - d.textlength(label, font=font) / 2, y + line_h + 2), label, fill=(230, 230, 230), font=font)
