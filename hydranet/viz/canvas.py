"""``Canvas``: what one sample is drawn on — one PIL image per camera (upscaled) and a BEV panel — with their
geometry (ego point -> BEV pixel, ego points -> camera pixels) and the record of what was drawn (legend, notes,
placed labels). The drawing primitives draw on it; ``views.py`` composes the picture."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from hydranet.data import Batch, Sample
from hydranet.geometry import BevGrid, invert_transform, transform_points
from hydranet.viz.style import LINE_STYLES, MIN_IMAGE_SHARE


class Canvas:
    """The canvases one sample is drawn on: one PIL image per camera and a BEV panel, with their geometry and
    what has been drawn (legend entries, notes, label boxes). The drawing primitives (``boxes.py``, ``maps.py``)
    draw on it; ``hydranet.viz.Views`` adds the composed picture. The BEV panel shows the extent of ``grid`` (the
    setup's, handed in): the canvas keeps the panel's mapping from ego metres to pixels, not the grid."""

    def __init__(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, camera_names: Sequence[str],
                 grid: BevGrid, scale: float = 2, bev_size: int | None = None) -> None:
        """``images`` ``[N, 3, H, W]`` RGB in 0-255 (uint8, or float holding 0-255), one per camera; ``intrinsics``
        ``[N, 3, 3]`` and ``T_ego_from_cam`` ``[N, 4, 4]`` of those cameras. Raises ``ValueError`` for another
        shape, or for float images scaled to [0, 1] (they would draw black)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] RGB, got {tuple(images.shape)}")
        if images.is_floating_point() and images.numel() and float(images.max()) <= 1.0 \
                and not bool((images == images.round()).all()):
            raise ValueError("images look scaled to [0, 1]: pass RGB in 0-255 (uint8, or float x 255)")
        n, _, h, w = images.shape
        self.image_hw = (h, w)
        self.scale = scale
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
        self._bev_corner = (grid.x_range[1], grid.y_range[1])  # ego (x, y) metres at the panel's top-left pixel
        self.bev = Image.new("RGB", (round((grid.y_range[1] - grid.y_range[0]) * self.bev_ppm),
                                     round((grid.x_range[1] - grid.x_range[0]) * self.bev_ppm)), (24, 26, 30))
        self.notes: list[str] = []  # e.g. "detection2d: 0 detections", written under the picture
        self.legend: dict[str, tuple[int, int, int]] = {}  # what the draw_* calls drew: name -> colour
        self.colorbar: str | None = None  # a depth scale was drawn: the colour bar's title ("depth (m)")
        # Line styles of the boxes drawn ("prediction" solid, "ground truth" dashed): the legend explains those only.
        self.outline_styles: set[str] = set()
        # Ground truth drawn over the predictions (``predict``/``infer --ground-truth``): masks as outlines and dense
        # depth as a grid of dots, so both stay visible on one picture (``truth_over_predictions``).
        self.truth_over_predictions = False
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

    def legend_entry(self, name: str | None, color: tuple[int, int, int], outline: str | None = None) -> None:
        """Record that something named ``name`` was drawn in ``color``: the legend lists exactly these
        (first colour wins); ``None`` is ignored. ``outline``: a box was drawn in this line style,
        ``"prediction"`` (solid) or ``"ground truth"`` (dashed), which the legend then explains."""
        if outline is not None:
            if outline not in LINE_STYLES:
                raise ValueError(f"legend_entry: outline must be one of {LINE_STYLES}, got {outline!r}")
            self.outline_styles.add(outline)
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
    def from_sample(cls, sample: Sample, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Canvas:
        """Canvases for one ``Sample``: its uint8 images ``[N, 3, H, W]``, K and T_ego_from_cam, drawn ``scale``
        times larger, beside a BEV panel of ``grid`` (``bev_size`` px high; default twice the camera height)."""
        return cls(sample.images, sample.intrinsics, sample.T_ego_from_cam, sample.camera_names, grid, scale, bev_size)

    @classmethod
    def from_batch(cls, batch: Batch, i: int, grid: BevGrid, scale: int = 2, bev_size: int | None = None) -> Canvas:
        """Canvases for frame ``i`` of a collated ``Batch`` (as ``from_sample``)."""
        return cls(batch.images[i], batch.intrinsics[i], batch.T_ego_from_cam[i], batch.camera_names, grid, scale,
                   bev_size)

    # ---- geometry --------------------------------------------------------------------------
    def bev_px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel (u, v) in the BEV panel of ego point (x, y) metres (car drives up the page)."""
        x_max, y_max = self._bev_corner
        return (y_max - y) * self.bev_ppm, (x_max - x) * self.bev_ppm

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
        self.draw_frustums(d)

    def draw_frustums(self, d: ImageDraw.ImageDraw) -> None:
        """Each camera's horizontal field of view as two lines on the BEV panel (``d`` draws on ``bev``)."""
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
