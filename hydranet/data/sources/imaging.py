"""Small image helpers shared by the real-data sources (kitti, bdd100k, frames): load a camera image at a
target size, resize label maps, rasterise sparse depth from projected points.

Resizing convention (as ``geometry.resize_intrinsics``): an image of ``W×H`` resized to ``W'×H'`` scales K by
``(W'/W, H'/H)``; pixel centres stay consistent. Camera images are resampled with a box/bilinear filter
(PIL ``Image.resize`` with ``BILINEAR``, which antialiases when shrinking; JPEGs are first decoded at the
largest 1/2^k scale still at least the target size, libjpeg's DCT scaling); label maps with nearest neighbour so
class ids are never blended.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from hydranet.data.sources.base import SourceError
from hydranet.limits import open_image


def load_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Read an image file as uint8 ``[3, H, W]`` RGB, resized to ``size = (H, W)`` when given.

    Returns ``(image, (H0, W0))`` with the file's original size, so callers can rescale K and labels. A 16-bit
    grey image keeps its top byte. Raises ``SourceError`` naming the file when it is missing, not an image or a
    32-bit or floating-point one, ``LimitError`` when its header
    claims more pixels than ``hydranet.limits.max_image_pixels()``."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: image file not found")
    try:
        with open_image(path, str(path)) as im:  # refuses a header over the pixel limit before decoding
            w0, h0 = im.size
            if size is not None and im.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the target is that much
                # smaller: a 1600x900 nuScenes JPEG -> 192x96 takes 7 instead of 49 ms (measured), and DCT
                # scaling is itself a good low-pass filter.
                im.draft("RGB", (size[1], size[0]))
            if im.mode.startswith("I;16"):
                # 16-bit grey (a machine-vision camera): its top byte. PIL's convert("RGB") clamps instead,
                # turning a normally exposed frame white.
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), "L")
            elif im.mode in ("I", "F"):
                raise SourceError(f"{path}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image has no "
                                  "one range to map to 8-bit RGB; store camera images as 8-bit (or 16-bit) RGB or grey")
            im = im.convert("RGB")
            if size is not None and (size[0], size[1]) != im.size[::-1]:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise SourceError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), (h0, w0)


def resize_label_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map ``[H, W]`` to ``size = (H', W')`` (ids are never blended)."""
    h0, w0 = a.shape
    h, w = size
    if (h, w) == (h0, w0):
        return a
    rows = np.minimum(((np.arange(h) + 0.5) * h0 / h).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * w0 / w).astype(np.int64), w0 - 1)
    return a[rows[:, None], cols[None, :]]


def scale_boxes(boxes: Tensor, sx: float, sy: float) -> Tensor:
    """Pixel boxes ``[M, 4]`` (x1, y1, x2, y2) of an image resized by (sx, sy)."""
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)


def sparse_depth(points_cam: Tensor, K: Tensor, size: tuple[int, int], min_depth: float = 0.5) -> Tensor:
    """Sparse z-depth map float32 ``[H, W]`` from camera-frame points ``[P, 3]`` (OpenCV frame, metres).

    Each point lands on the pixel containing its projection; where several land on one pixel the nearest
    wins (a z-buffer), so foreground returns are not hidden behind background ones. Pixels no point hits
    are 0 (= no label), the convention of ``Sample``'s ``depth``."""
    h, w = size
    pts = points_cam.double()
    z = pts[:, 2]
    keep = z > min_depth
    pts, z = pts[keep], z[keep]
    uvw = pts @ K.double().T
    u = torch.floor(uvw[:, 0] / z).long()
    v = torch.floor(uvw[:, 1] / z).long()
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z = u[inside], v[inside], z[inside]
    flat = torch.full((h * w,), float("inf"), dtype=torch.float64)
    flat.scatter_reduce_(0, v * w + u, z, reduce="amin")
    flat[torch.isinf(flat)] = 0.0
    return flat.reshape(h, w).float()
