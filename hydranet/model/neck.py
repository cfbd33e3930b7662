"""Feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017).

Turns the trunk's stage outputs into a dict of levels ``"p2"`` .. ``"p5"`` (stride ``2**k``) with
one common channel count, which is what every camera head and the camera→BEV fusion read. Levels
finer than ``min_level`` are not built at all (``min_level=3`` saves the stride-4 work on CPUs);
camera heads for dense tasks pick the finest level present via ``HeadContext.camera_strides``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Lateral 1×1 convs, a nearest-neighbour top-down path, and a 3×3 smoothing conv per level."""

    def __init__(self, in_channels: list[int], in_strides: list[int], channels: int = 64, min_level: int = 2,
                 max_level: int = 5):
        super().__init__()
        if len(in_channels) != len(in_strides):
            raise ValueError(f"FPN: {len(in_channels)} input channel counts but {len(in_strides)} strides")
        levels = {round(math.log2(s)): (i, c) for i, (s, c) in enumerate(zip(in_strides, in_channels, strict=True))}
        wanted = list(range(min_level, max_level + 1))
        missing = [lvl for lvl in wanted if lvl not in levels]
        if missing:
            raise ValueError(f"FPN levels p{min_level}..p{max_level} need trunk strides "
                             f"{[2 ** lvl for lvl in wanted]}, trunk gives {in_strides}")
        self.names = [f"p{lvl}" for lvl in wanted]
        self.strides: dict[str, int] = {f"p{lvl}": 2 ** lvl for lvl in wanted}
        self.input_index = [levels[lvl][0] for lvl in wanted]
        self.channels = channels
        self.lateral = nn.ModuleList(nn.Conv2d(levels[lvl][1], channels, 1) for lvl in wanted)
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True))
            for _ in wanted)

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        laterals = [conv(feats[i]) for conv, i in zip(self.lateral, self.input_index, strict=True)]
        # Top-down: coarsest first, each finer level adds the upsampled coarser one.
        for k in range(len(laterals) - 2, -1, -1):
            laterals[k] = laterals[k] + F.interpolate(laterals[k + 1], size=laterals[k].shape[-2:], mode="nearest")
        return {name: out(x) for name, out, x in zip(self.names, self.output, laterals, strict=True)}
