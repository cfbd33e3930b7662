"""``Views``: the ``Canvas`` of one sample and its composed picture: cameras laid out as on the car, the BEV
panel beside them (with the ego car's footprint), a legend and notes below."""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image, ImageDraw

from hydranet.viz.boxes import draw_boxes3d
from hydranet.viz.canvas import Canvas
from hydranet.viz.maps import depth_rgb
from hydranet.viz.style import DEPTH_RANGE, DEPTH_TICKS, LINE_STYLES, dashed_polyline, label_font

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


def rig_layout(T_ego_from_cam: torch.Tensor) -> tuple[dict[int, tuple[float, float]], int, int]:
    """Tiles for any rig, from its geometry: ``({camera: (row, column)}, columns, rows)``. Cameras looking
    forward (optical axis with ego x >= 0) on the top row, rear-facing ones below, each row ordered from the
    car's left to its right (by the axis's ego y, left positive), the shorter row centred under the longer:
    as on the car, like ``LAYOUT`` for the world's rig. ``T_ego_from_cam [N, 4, 4]``."""
    axis = T_ego_from_cam[:, :3, 2].float()  # the camera's z (optical) axis in the ego frame
    front = [i for i in range(len(axis)) if float(axis[i, 0]) >= 0.0]
    rear = [i for i in range(len(axis)) if float(axis[i, 0]) < 0.0]
    rows = [sorted(row, key=lambda i: -float(axis[i, 1])) for row in (front, rear) if row]
    cols = max(len(row) for row in rows)
    slots = {i: (r, (cols - len(row)) / 2 + c) for r, row in enumerate(rows) for c, i in enumerate(row)}
    return slots, cols, len(rows)


class Views(Canvas):
    """A ``Canvas`` that composes its picture: cameras laid out as on the car, the BEV panel beside them (with the
    ego car), a legend and notes below."""

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
        elif several:
            slots, cols, rows = rig_layout(self.T_ego_from_cam)
        else:
            slots, cols, rows = {0: (0, 0)}, 1, 1
        bev = self.bev
        if bev.height != rows * h:
            bev = bev.resize((round(bev.width * rows * h / bev.height), rows * h), Image.BILINEAR)
        font = label_font(max(12, h // 14))
        line_h = max(12, h // 14) + 6
        # At least as wide as the title; the legend wraps to the width (counted on a scratch canvas first).
        title_w = round(ImageDraw.Draw(bev).textlength(title or "", font=label_font(18)))
        width = max(cols * w + bev.width + 8, title_w + 16)
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
            d.text((8, 4), title, fill=(230, 230, 230), font=label_font(18))
        self._legend(d, font, 8, rows * h + header + 4, line_h, width)
        return canvas

    def _legend(self, d: ImageDraw.ImageDraw, font: Any, x: int, y: int, line_h: int, width: int) -> int:
        """The legend below the cameras: the line styles of the boxes drawn, a swatch per thing drawn
        (``legend``, wrapped to ``width``), the depth colour bar in metres when a depth was drawn, then the
        notes; returns the number of legend rows."""
        x0, rows = x, 1
        styles = [s for s in LINE_STYLES if s in self.outline_styles]
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
                dashed_polyline(d, [(x, mid), (x + 24, mid)], (230, 230, 230), 2)
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
