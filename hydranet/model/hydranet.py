"""``HydraNet``: one trunk shared by every camera and every task, many heads, camera→BEV fusion.

Data flow (shapes for B samples of N cameras):

    images uint8 [B, N, 3, H, W] ──normalise, fold cameras into the batch──► [B*N, 3, H, W]
      └─► trunk (RegNet) ─► neck (FPN) ─► {"p2".."p5": [B*N, C, H/s, W/s]}   ← camera_features()
            ├─► camera heads ─► outputs [B*N, ...] unfolded to [B, N, ...]
            └─► fusion (K, T per sample) ─► BEV [B, C_bev, R, C'] ─► bev heads ─► [B, ...]
                  └─ video memory (``fusion.temporal``): state in, state out — ``forward_step``

Three entry points: ``forward`` (one frame), ``forward_step`` (one frame of a sequence, the memory's state in
and out: the caller owns it, ``hydranet.eval.Streamer`` for video) and ``forward_features`` (either of them on
precomputed camera features: sub-graph training on a feature cache). Only the sub-graph the requested tasks need
runs: a request with only camera tasks never calls ``fusion``; a request with only BEV tasks still runs the
trunk but skips the camera heads.
"""

from __future__ import annotations

from typing import Any, overload

import torch
from torch import Tensor, nn

from hydranet.geometry import check_finite_cameras, check_principal_points
from hydranet.model.config import ModelConfig
from hydranet.model.temporal import TemporalState
from hydranet.model.tracing import tracing
from hydranet.setup import Setup
from hydranet.tasks import IMAGE_KEY, HeadContext, Task

# ImageNet statistics in 0..255 units: the export manifest records them (pre-processing contract).
PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


class HydraNet(nn.Module):
    """One trunk shared by every camera and task, an FPN neck, optional camera→BEV fusion, task heads.

    ``HydraNet`` only composes the parts it is given (``hydranet.model.builder.create_model`` builds
    them from a ``ModelConfig``): ``trunk`` (uniform feature interface, see
    ``hydranet.model.registry``), ``neck`` (``{"p2".."p5": [B*N, C, h, w]}`` with ``strides``),
    ``fusion`` (cameras → BEV ``[B, C_bev, R, C']``, with its temporal module; None when no task
    reads BEV), ``tasks`` (name → ``Task``, in request order) and ``heads`` (name → head module,
    built from ``head_context``). ``cfg`` is the ``ModelConfig`` the parts were built from (``cfg.setup``: the
    rigs, image size, grid and vocabularies, the one ``Setup``); export manifests, checkpoints and suites read
    it, so a hand-composed model passes one too.
    Raises ``ValueError`` for no tasks, a head missing for a task, or a BEV task without fusion.
    """

    def __init__(self, trunk: nn.Module, neck: nn.Module, tasks: dict[str, Task], heads: nn.ModuleDict,
                 head_context: HeadContext, fusion: nn.Module | None = None, cfg: ModelConfig | None = None):
        super().__init__()
        if not tasks:
            raise ValueError("HydraNet needs at least one task")
        if set(heads) != set(tasks):
            raise ValueError(f"heads {sorted(heads)} do not match tasks {sorted(tasks)}")
        self.cfg = cfg if cfg is not None else ModelConfig()
        # The camera counts of the setup's rigs, fixed at build: every forward checks its input against them.
        self._camera_counts = self.cfg.setup.camera_counts()
        self.pixel_mean = PIXEL_MEAN
        self.pixel_std = PIXEL_STD
        self.register_buffer("_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_inv_std", 1.0 / torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        # Registration order (trunk, neck, fusion, heads) fixes parameter order for the optimizer.
        self.trunk = trunk
        self.neck = neck
        self.task_objects: dict[str, Task] = dict(tasks)
        self.camera_tasks = [n for n, tk in self.task_objects.items() if tk.space == "camera"]
        self.bev_tasks = [n for n, tk in self.task_objects.items() if tk.space == "bev"]
        if self.bev_tasks and fusion is None:
            raise ValueError(f"BEV task(s) {self.bev_tasks} need a fusion module")
        self.fusion = fusion
        self.head_context = head_context
        self.heads = heads
        # Whether a camera head reads the image's own pixels (``pixel_skip``): then camera_features carries them.
        self.reads_pixels = any(getattr(h, "pixel_skip", False) for h in heads.values())

    # ----------------------------------------------------------------------------------------

    def resolve_tasks(self, tasks: list[str] | tuple[str, ...] | None) -> list[str]:
        """Requested task names in config order; ``None`` = all; unknown names are an error."""
        if tasks is None:
            return list(self.task_objects)
        if isinstance(tasks, str):
            tasks = [tasks]
        unknown = [t for t in tasks if t not in self.task_objects]
        if unknown:
            raise KeyError(f"tasks {unknown} are not configured in this model; configured: {list(self.task_objects)}")
        return [t for t in self.task_objects if t in tasks]

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``[..., 3, H, W]`` → float ``(x - mean) / std``."""
        return (images.float() - self._mean) * self._inv_std

    def camera_features(self, images: Tensor) -> dict[str, Tensor]:
        """FPN levels for all cameras in one batched call: uint8 ``[B, N, 3, H, W]`` → ``{name: [B*N, C, h, w]}``,
        plus the normalised images themselves under ``"image"`` (``[B*N, 3, H, W]`` float32) when a head reads
        pixels (``pixel_skip``)."""
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, N, 3, H, W], got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (the model normalises them), got {images.dtype}")
        B, N = images.shape[:2]
        x = self.normalize(images.reshape(B * N, *images.shape[2:]))
        feats = self.neck(self.trunk(x))
        if self.reads_pixels:
            feats[IMAGE_KEY] = x
        return feats

    @property
    def setup(self) -> Setup:
        """The ``Setup`` the model is built for (``cfg.setup``): rigs, image size, BEV grid, vocabularies."""
        return self.cfg.setup

    @property
    def is_temporal(self) -> bool:
        """Whether the model has the video memory (``fusion.temporal``) on its BEV path."""
        return self.fusion is not None and self.fusion.temporal is not None

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> TemporalState:
        """The reset state of the video memory for ``batch_size`` sequences."""
        if not self.is_temporal:
            raise ValueError("this model has no video memory (model.fusion.temporal is off)")
        assert self.fusion is not None and self.fusion.temporal is not None
        return self.fusion.temporal.init_state(batch_size, device)

    def _check_geometry(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                        image_hw: tuple[int, int], camera_valid: Tensor | None) -> Tensor | None:
        if intrinsics.ndim != 4 or intrinsics.shape[-2:] != (3, 3):
            raise ValueError(f"intrinsics must be [B, N, 3, 3], got {tuple(intrinsics.shape)}")
        if T_ego_from_cam.shape != (*intrinsics.shape[:2], 4, 4):
            raise ValueError(f"T_ego_from_cam must be [B, N, 4, 4] = {(*intrinsics.shape[:2], 4, 4)}, "
                             f"got {tuple(T_ego_from_cam.shape)}")
        if not tracing():  # data checks: eager only
            check_finite_cameras(intrinsics, T_ego_from_cam)
        B, N = intrinsics.shape[:2]
        first = next(iter(feats.values()))
        if first.shape[0] != B * N:
            raise ValueError(f"camera features have batch {first.shape[0]}, expected B*N = {B}*{N}")
        camera_valid = self.check_cameras(N, B, camera_valid)
        if not tracing():
            # K in another image's pixels (a camera's native resolution, typically) puts the principal point
            # outside the input, and every projection lands elsewhere in silence. A failed camera's K is not read.
            check_principal_points(intrinsics, image_hw, camera_valid)
        return camera_valid

    def _run_heads(self, names: list[str], feats: dict[str, Tensor], B: int, N: int, bev_fn: Any,
                   camera_valid: Tensor | None) -> dict[str, dict[str, Tensor]]:
        out: dict[str, dict[str, Tensor]] = {}
        for name in names:
            if self.task_objects[name].space == "camera":
                out[name] = {k: v.reshape(B, N, *v.shape[1:]) for k, v in self.heads[name](feats).items()}
                if camera_valid is not None:  # a failed camera's head outputs are marked, not hidden
                    out[name]["camera_valid"] = camera_valid
        bev_names = [n for n in names if self.task_objects[n].space == "bev"]
        if bev_names:
            bev = bev_fn()
            for name in bev_names:
                out[name] = self.heads[name](bev)
        return {name: out[name] for name in names}

    @overload
    def forward_features(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                         tasks: list[str] | None = None, image_hw: tuple[int, int] | None = None,
                         camera_valid: Tensor | None = None, *, state: None = None, T_world_from_ego: None = None,
                         timestamp: None = None) -> dict[str, dict[str, Tensor]]: ...

    @overload
    def forward_features(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                         tasks: list[str] | None = None, image_hw: tuple[int, int] | None = None,
                         camera_valid: Tensor | None = None, *, state: TemporalState, T_world_from_ego: Tensor,
                         timestamp: Tensor) -> tuple[dict[str, dict[str, Tensor]], TemporalState]: ...

    def forward_features(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                         tasks: list[str] | None = None, image_hw: tuple[int, int] | None = None,
                         camera_valid: Tensor | None = None, *, state: TemporalState | None = None,
                         T_world_from_ego: Tensor | None = None, timestamp: Tensor | None = None,
                         ) -> dict[str, dict[str, Tensor]] | tuple[dict[str, dict[str, Tensor]], TemporalState]:
        """Heads (and fusion, if a requested task is a BEV task) on precomputed camera features ``feats``
        (``camera_features``' output, e.g. from a feature cache); ``image_hw`` is the size they were computed at
        (default: the setup's image size) and ``camera_valid`` is as in ``forward``.

        Without ``state``: one frame alone, like ``forward``. With ``state`` (and the frame's ``T_world_from_ego``
        and ``timestamp``): one frame of a sequence, like ``forward_step``; returns ``(outputs, new_state)``, and a
        request without BEV tasks returns ``state`` unchanged (the memory lives on the BEV path). Raises
        ``ValueError`` for inconsistent shapes, for K as ``forward`` does (at ``image_hw``), and for a ``state``
        given to a model without the video memory."""
        names = self.resolve_tasks(tasks)
        hw = image_hw or self.setup.image_size
        camera_valid = self._check_geometry(feats, intrinsics, T_ego_from_cam, hw, camera_valid)
        B, N = intrinsics.shape[:2]
        if state is None:
            def bev() -> Tensor:
                assert self.fusion is not None  # built whenever a bev task is configured
                return self.fusion(feats, intrinsics, T_ego_from_cam, hw, camera_valid)

            return self._run_heads(names, feats, B, N, bev, camera_valid)
        if not self.is_temporal:
            raise ValueError("forward_step needs the video memory (model.fusion.temporal); use forward()")
        if T_world_from_ego is None or timestamp is None:
            raise ValueError("a step with state needs the frame's T_world_from_ego [B, 4, 4] and timestamp [B]")
        new: list[TemporalState] = []

        def bev_step() -> Tensor:
            assert self.fusion is not None
            out, st = self.fusion.forward_step(feats, intrinsics, T_ego_from_cam, hw, T_world_from_ego, timestamp,
                                               state, camera_valid)
            new.append(st)
            return out

        outputs = self._run_heads(names, feats, B, N, bev_step, camera_valid)
        return outputs, (new[0] if new else state)

    def forward(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, tasks: list[str] | None = None,
                camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """``images`` uint8 ``[B, N, 3, H, W]``, ``intrinsics [B, N, 3, 3]``, ``T_ego_from_cam [B, N, 4, 4]``
        → ``{task: {output: tensor}}``; camera outputs ``[B, N, ...]``, BEV outputs ``[B, ...]``.

        ``camera_valid`` bool ``[B, N]`` (None = all cameras work): a False camera is a failed one. Fusion
        ignores it (its sampling points read exact zeros and leave the per-point camera count), so BEV
        points it never saw are bit-for-bit what they are without the mask, and the rest average over the
        remaining cameras; the BEV encoder's 3×3 convolutions then spread it by their receptive field.
        Camera-task outputs carry the mask as ``out[task]["camera_valid"]``: a failed camera's head outputs
        are still computed but marked. N must be the model's camera count: a missing camera is passed (any
        image, any finite K and T) with its mask False. Raises ``ValueError`` naming both counts for a wrong camera
        count, for a malformed mask, for images of another size than ``setup.image_size`` (the network's input:
        resize the cameras and rescale K, ``hydranet.setup.Camera.K(image_size)``), for a K or T_ego_from_cam
        holding a non-finite value (any camera's), and naming the sample and camera index of a working camera
        whose K puts its principal point outside the input (a K left in another resolution's pixels;
        ``hydranet.geometry.principal_point_inside``).

        One frame alone: a temporal model runs from the reset state (no history); sequences use
        ``forward_step`` with an explicit state (``hydranet.eval.Streamer`` carries it from frame to frame).
        """
        self._check_images(images, intrinsics)
        names = self.resolve_tasks(tasks)
        self.check_cameras(images.shape[1], images.shape[0], camera_valid)
        feats = self.camera_features(images)
        return self.forward_features(feats, intrinsics, T_ego_from_cam, names, tuple(images.shape[-2:]), camera_valid)

    def forward_step(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, T_world_from_ego: Tensor,
                     timestamp: Tensor, state: TemporalState, tasks: list[str] | None = None,
                     camera_valid: Tensor | None = None) -> tuple[dict[str, dict[str, Tensor]], TemporalState]:
        """One frame of ``B`` sequences: ``forward``'s inputs plus the ego motion — ``T_world_from_ego
        [B, 4, 4]`` (float32, the sequence's world frame) and ``timestamp [B]`` (seconds) — and the video
        memory's ``state`` (``init_state`` at a sequence start). Returns the outputs and the new state. Raises
        ``ValueError`` for a model without the video memory or a missing state."""
        if not self.is_temporal:
            raise ValueError("forward_step needs the video memory (model.fusion.temporal); use forward()")
        if state is None:
            raise ValueError("forward_step needs the memory's state (init_state(B) at a sequence start)")
        self._check_images(images, intrinsics)
        names = self.resolve_tasks(tasks)
        feats = self.camera_features(images)
        return self.forward_features(feats, intrinsics, T_ego_from_cam, names, tuple(images.shape[-2:]), camera_valid,
                                     state=state, T_world_from_ego=T_world_from_ego, timestamp=timestamp)

    def _check_images(self, images: Tensor, intrinsics: Tensor) -> None:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, N, 3, H, W], got {tuple(images.shape)}")
        if images.shape[:2] != intrinsics.shape[:2]:
            raise ValueError(f"images {tuple(images.shape)} and intrinsics {tuple(intrinsics.shape)} "
                             "disagree on [B, N]")
        if not tracing() and tuple(images.shape[-2:]) != tuple(self.setup.image_size):
            # The setup's image size is the network's input (K is in its pixels): a frame of another size would run
            # -- the network is convolutional -- and quietly score worse.
            raise ValueError(f"images are {tuple(images.shape[-2:])} (H, W) but the model's setup.image_size is "
                             f"{tuple(self.setup.image_size)}: resize every camera to it and rescale K with it "
                             "(hydranet.setup.Camera.K(image_size)), as the data sources do")

    def check_cameras(self, n: int, b: int, camera_valid: Tensor | None) -> Tensor | None:
        """The camera count must be that of one of the model's rigs (``setup.rigs``); ``camera_valid`` must be
        bool ``[B, N]``. Returns the mask."""
        if n not in self._camera_counts:
            rigs = ", ".join(f"{r.name} ({len(r)})" for r in self.setup.rigs)
            raise ValueError(f"inputs have {n} cameras but the model's rigs are {rigs} (setup.rigs); pass every "
                             "camera of a rig in rig order and mark failed ones False in camera_valid [B, N]")
        if camera_valid is None:
            return None
        if camera_valid.dtype != torch.bool or tuple(camera_valid.shape) != (b, n):
            raise ValueError(f"camera_valid must be bool [B, N] = [{b}, {n}], got {camera_valid.dtype} "
                             f"{tuple(camera_valid.shape)}")
        return camera_valid

    # ----------------------------------------------------------------------------------------

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: trunk, neck, fusion, and each head (``head/<task>``)."""
        def count(m: nn.Module | None) -> int:
            return 0 if m is None else sum(p.numel() for p in m.parameters())

        counts = {"trunk": count(self.trunk), "neck": count(self.neck), "fusion": count(self.fusion)}
        counts |= {f"head/{n}": count(h) for n, h in self.heads.items()}
        counts["total"] = count(self)
        return counts
