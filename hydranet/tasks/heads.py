"""Building blocks of the task heads: their options, conv stacks, FPN level choice and the shapes they hand to losses.

Convention used by every camera task: a feature cell ``(j, i)`` of a map with stride ``s`` covers pixels
``[i*s, (i+1)*s) × [j*s, (j+1)*s)``; its centre is ``((i + 0.5) s, (j + 0.5) s)``. A point ``u`` maps to cell
``floor(u / s)`` with sub-cell offset ``u / s - floor(u / s)`` in ``[0, 1)``; decoding is ``(i + offset) * s``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hydranet.data import Batch
from hydranet.tasks.base import HeadContext, Task, TaskOptions

# The camera-feature key of the normalised images ``[B*N, 3, H, W]`` (``HydraNet.camera_features``), beside
# the FPN levels: what a head with ``pixel_skip`` reads.
IMAGE_KEY = "image"


class CameraHeadOptions(TaskOptions):
    """Options every camera head shares: which FPN level it reads and how big its conv stack is."""

    # FPN level (stride) the head reads; None = the task's preferred stride if the neck has it, else the
    # finest level the neck builds (necks may skip stride 4 to save CPU time).
    stride: int | None = Field(None, ge=1)
    fuse_strides: list[int] = Field(default_factory=list)  # coarser levels summed in (upsampled)
    # Defaults are sized for the CPU demo: a head should cost a fraction of the shared trunk, or the
    # HydraNet's point (one trunk for all tasks) is lost. Larger models raise width/depth per task.
    width: int = Field(16, ge=1)  # channels of the head's 3×3 convs
    depth: int = Field(1, ge=0)  # shared 3×3 conv blocks
    branch_depth: int = Field(0, ge=0)  # extra 3×3 blocks per output before its 1×1 conv
    # Also read the image's own pixels: the normalised RGB of each stride×stride cell (space-to-depth, 3·s²
    # channels) joins the FPN features. For evidence the trunk's early downsampling blurs away, e.g. the
    # colour of a 2-pixel traffic-light lamp.
    pixel_skip: bool = False


class DenseHeadOptions(CameraHeadOptions):
    """``CameraHeadOptions`` of a dense per-pixel task (drivable, lanes, depth) + how its outputs reach
    image resolution: ``subpixel`` -- the last 1×1 conv emits stride² values per cell that a pixel shuffle
    lays out (Shi et al. 2016, ESPCN): learnt, and cheap next to interpolating and back-propagating through
    a full-resolution map; ``bilinear`` -- one value per cell, interpolated to label resolution."""

    upsample: Literal["subpixel", "bilinear"] = "subpixel"


class BevHeadOptions(TaskOptions):
    """Options every BEV head shares: channels of its 3×3 convs, shared conv blocks, extra blocks per output."""

    width: int = Field(32, ge=1)
    depth: int = Field(1, ge=0)
    branch_depth: int = Field(0, ge=0)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 conv (no bias) + BatchNorm + ReLU: ``[S, in, H, W] -> [S, out, H, W]`` (same spatial size)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ConvHead(nn.Module):
    """Shared conv stem, then one small branch per named output (CenterNet/CenterPoint "separate head").

    ``outputs`` maps output name -> channels; ``bias_init`` sets the final bias of chosen outputs
    (e.g. a focal-loss prior of 0.01 for heatmaps, log of a typical depth for depth).
    """

    def __init__(self, in_channels: int, outputs: dict[str, int], width: int = 64, depth: int = 2,
                 branch_depth: int = 1, bias_init: dict[str, float] | None = None, subpixel: int = 1) -> None:
        super().__init__()
        self.subpixel = subpixel  # > 1: every output is emitted at subpixel× the input resolution
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers.append(conv_block(c, width))
            c = width
        self.stem = nn.Sequential(*layers)
        self.branches = nn.ModuleDict()
        for name, channels in outputs.items():
            branch: list[nn.Module] = []
            cin = c
            for _ in range(branch_depth):
                branch.append(conv_block(cin, width))
                cin = width
            out = nn.Conv2d(cin, channels * subpixel**2, 1)
            nn.init.normal_(out.weight, std=0.01)
            nn.init.constant_(out.bias, (bias_init or {}).get(name, 0.0))
            tail = [nn.PixelShuffle(subpixel)] if subpixel > 1 else []
            self.branches[name] = nn.Sequential(*branch, out, *tail)
        self.branch_depth = branch_depth

    def output_convs(self) -> list[nn.Conv2d]:
        """The convolution that writes each output (the last of its branch), in ``outputs`` order."""
        return [next(m for m in reversed(branch) if isinstance(m, nn.Conv2d)) for branch in self.branches.values()]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        if self.branch_depth:
            return {name: branch(x) for name, branch in self.branches.items()}
        # Every branch is one 1×1 conv on the stem's map (+ the sub-pixel shuffle): run them as one conv of the
        # stacked weights and split its channels. The same products, but the stem's map -- the largest tensor a
        # head touches -- is read once instead of once per output, forward and backward.
        convs = [branch[0] for branch in self.branches.values()]
        y = F.conv2d(x, torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]))
        parts = y.split([c.out_channels for c in convs], 1)
        return {name: F.pixel_shuffle(part, self.subpixel) if self.subpixel > 1 else part
                for name, part in zip(self.branches, parts, strict=True)}


def level_for_stride(ctx: HeadContext, stride: int) -> str:
    """Name of the FPN level with ``stride``; a clear error lists the ones the model has."""
    for name, s in ctx.camera_strides.items():
        if s == stride:
            return name
    raise ValueError(f"no FPN level with stride {stride}; the model's levels are {dict(ctx.camera_strides)}")


def choose_stride(ctx: HeadContext, requested: int | None, preferred: int) -> int:
    """The stride a camera head reads: ``requested`` (must exist), else ``preferred`` if the neck has it,
    else the neck's finest level."""
    if requested is not None:
        level_for_stride(ctx, requested)
        return requested
    available = sorted(ctx.camera_strides.values())
    if not available:
        raise ValueError("HeadContext.camera_strides is empty: the model has no FPN levels")
    return preferred if preferred in available else available[0]


def space_to_depth_kernel(channels: int, stride: int) -> Tensor:
    """One-hot conv weight ``[channels*stride², channels, stride, stride]`` float32: a conv with it at stride
    ``stride`` is ``F.pixel_unshuffle`` (output channel ``c*s² + i*s + j`` is input channel ``c`` at offset
    ``(i, j)`` of each cell), exactly, since every other product is ``0 * pixel``. A conv runs on the matrix
    engine and exports as one ONNX ``Conv``; ``pixel_unshuffle`` is a strided copy (3 ms per training step at
    32 x 3 x 96 x 192 on one AMX core) and exports as a 6-D ``Transpose`` (1.3 ms of a 20 ms INT8 frame)."""
    s = stride
    weight = torch.zeros(channels * s * s, channels, s, s)
    for c in range(channels):
        for i in range(s):
            for j in range(s):
                weight[c * s * s + i * s + j, c, i, j] = 1.0
    return weight


class CameraHead(nn.Module):
    """Reads one FPN level (or sums several, coarser ones upsampled to the finest) and runs a ``ConvHead``.

    Summing is enough because FPN levels already share channels and mix top-down context; it costs
    no parameters and lets a head see larger objects' context at its fine stride.
    """

    def __init__(self, ctx: HeadContext, stride: int, fuse_strides: list[int], outputs: dict[str, int], width: int,
                 depth: int, branch_depth: int = 1, bias_init: dict[str, float] | None = None,
                 full_resolution: bool = False, pixel_skip: bool = False) -> None:
        super().__init__()
        if any(s <= stride for s in fuse_strides):
            raise ValueError(f"fuse_strides {fuse_strides} must all be coarser than the head's stride {stride}")
        self.levels = [level_for_stride(ctx, s) for s in [stride, *sorted(set(fuse_strides))]]  # finest first
        self.pixel_skip = pixel_skip
        if pixel_skip:  # not a parameter, not in checkpoints: built from the stride
            self.register_buffer("space_to_depth", space_to_depth_kernel(3, stride), persistent=False)
        in_channels = ctx.camera_channels + (3 * stride * stride if pixel_skip else 0)
        self.head = ConvHead(in_channels, outputs, width, depth, branch_depth, bias_init,
                             subpixel=stride if full_resolution else 1)
        self.stride = stride  # of the FPN level read
        self.output_stride = 1 if full_resolution else stride  # of the outputs, relative to the image

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        x = features[self.levels[0]]
        for name in self.levels[1:]:
            x = x + F.interpolate(features[name], size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.pixel_skip:  # the image's own pixels, each stride×stride cell as 3·s² channels
            image = features[IMAGE_KEY]
            s = self.stride
            # An image side that is not a multiple of the stride is zero-padded at its far edge, as the trunk's
            # strided convolutions round up (a 97-pixel side gives a 25-cell map at stride 4).
            pad_h, pad_w = -image.shape[-2] % s, -image.shape[-1] % s
            if pad_h or pad_w:
                image = F.pad(image, (0, pad_w, 0, pad_h))
            image = image.to(x.dtype).contiguous(memory_format=torch.channels_last)
            pixels = F.conv2d(image, self.space_to_depth.to(image.dtype), stride=s)
            if pixels.shape[-2:] != x.shape[-2:]:  # no crop, and no exported Slice, where the sides agree
                pixels = pixels[..., :x.shape[-2], :x.shape[-1]]
            x = torch.cat([x, pixels.contiguous(memory_format=torch.channels_last)], 1)
        return self.head(x)


class CameraTask(Task):
    """A task on per-camera FPN features; ``build_head`` resolves and records the stride it reads."""

    space = "camera"
    preferred_stride: ClassVar[int] = 4
    cfg: CameraHeadOptions

    def camera_head(self, ctx: HeadContext, outputs: dict[str, int],
                    bias_init: dict[str, float] | None = None) -> CameraHead:
        """The ``CameraHead`` for this task's options, ``outputs`` mapping output name -> channels.

        The stride comes from ``choose_stride`` (option ``stride``, else ``preferred_stride``, else the finest
        level); the stride of the outputs (1 for a dense task with ``upsample: subpixel``) is recorded in
        ``self.stride`` for decoding. Raises ``ValueError`` when a requested or
        fused stride is not an FPN level of the model, or a fused stride is not coarser than the head's."""
        stride = choose_stride(ctx, self.cfg.stride, self.preferred_stride)
        subpixel = isinstance(self.cfg, DenseHeadOptions) and self.cfg.upsample == "subpixel"
        head = CameraHead(ctx, stride, self.cfg.fuse_strides, outputs, self.cfg.width, self.cfg.depth,
                          self.cfg.branch_depth, bias_init, full_resolution=subpixel, pixel_skip=self.cfg.pixel_skip)
        self.stride = head.output_stride
        return head

    def output_stride(self, x: Tensor, batch: Batch) -> int:
        """Stride of head output ``x [B, N, C, h, w]``: the built head's, else inferred from the image size."""
        stride = getattr(self, "stride", None)
        if stride is not None:
            return int(stride)
        return max(1, round(batch.images.shape[-2] / x.shape[-2]))


class BevHead(nn.Module):
    """``ConvHead`` on the BEV feature map ``[B, C, R, C']``."""

    def __init__(self, ctx: HeadContext, outputs: dict[str, int], width: int, depth: int,
                 branch_depth: int = 1, bias_init: dict[str, float] | None = None) -> None:
        super().__init__()
        self.head = ConvHead(ctx.bev_channels, outputs, width, depth, branch_depth, bias_init)

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        return self.head(bev)


def prior_bias(p: float) -> float:
    """Logit bias so that sigmoid starts at ``p`` (focal-loss initialisation, RetinaNet §4.1)."""
    return -math.log((1 - p) / p)


def check_camera_output(name: str, x: Tensor, batch: Batch) -> None:
    """Raise ``ValueError`` naming task ``name`` unless ``x`` is an unfolded camera output
    ``[B, N, ...]`` for ``batch`` (``B`` samples, ``N`` cameras)."""
    if x.ndim < 3 or x.shape[0] != len(batch) or x.shape[1] != len(batch.camera_names):
        raise ValueError(f"{name}: expected [B={len(batch)}, N={len(batch.camera_names)}, ...] outputs, "
                         f"got {tuple(x.shape)} (did the model unfold cameras?)")


def to_label_resolution(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """``[B, N, C, h, w]`` head output -> ``[B*N, C, H, W]`` float32 at label resolution (bilinear when the
    output is coarser: ``upsample: bilinear``; as is for sub-pixel outputs, which are at label resolution).

    Dense camera tasks compute their loss at label resolution rather than on downsampled labels: lane
    lines are 1-3 px wide and vanish under nearest/max pooling, depth edges mix foreground and background,
    and the loss then scores exactly what ``decode`` returns. float32 always: losses run outside autocast,
    and a bf16 logit carries 3 significant digits."""
    flat = x.flatten(0, 1).float()
    if tuple(flat.shape[-2:]) == tuple(hw):
        return flat
    return F.interpolate(flat, size=hw, mode="bilinear", align_corners=False)
