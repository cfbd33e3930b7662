"""Video: a BEV feature memory (time queue + space queue) fused recurrently by a convolutional GRU.

What the module keeps between frames (``TemporalState``, all tensors, batch first):

- a **time queue** of the last ``time_queue`` encoded BEV maps, one pushed every ``push_every_frames``
  frames, and a **space queue** of ``space_queue`` maps, one pushed every ``push_every_metres`` of ego
  travel. A car waiting at a red light stops pushing into the space queue, so it still holds what it saw
  while approaching (the cross traffic before the queue of cars hid it); the time queue keeps the recent
  past that velocity needs. This is the two-queue memory of Tesla's "AI Day" (2021) video module;
- each entry's pose ``T_world_from_ego`` and timestamp, so an entry is warped into the *current* ego
  frame from its own frame every time it is read (one interpolation, no blur piling up over frames);
- a convolutional-GRU hidden map (Ballas et al., "Delving Deeper into Convolutional Networks for
  Learning Video Representations", ICLR 2016) and the pose it is expressed in.

Where it sits: after the BEV encoder's residual stages (fusion resolution, ``bev_channels``), before the
upsample to the grid, so the heads read the fused map. The sampler's map has no depth -- a camera feature
lands on every cell along its ray -- so an object's motion barely shows there; the encoder has already
localised objects (BEVDet4D aligns and fuses such localised BEV features, Huang & Huang 2022). Measured
with ``benchmarks/temporal.py``: 3D mAP was higher with the memory here than with it before the encoder,
where it fell below the single-frame model's (docs/decisions.md, "The video memory: where it sits and the
motion read-out").

Each frame: every queue entry and the hidden map are warped into the current ego frame with
``grid_sample`` on fp32 coordinates (the static world lands on the same cell; moving objects are
displaced, which is what the GRU reads velocity from, together with each entry's age in seconds);
``concat(current BEV, warped entries, validity masks, ages, ego velocity[, motion])`` is mixed per cell
(1×1 conv) into the GRU input. The ego velocity (m/s in the current ego frame, from the newest time-queue
entry's pose and age: the car's odometry) is what a single frame cannot know and traffic's speed follows.
The optional ``motion`` (``correlation_radius`` > 0) is read, per time-queue entry, from a local cost
volume between the current BEV and the warped entry -- the cosine similarity of their features at (2r+1)²
displacements up to ``correlation_radius`` cells (FlowNet's correlation layer, Dosovitskiy et al., ICCV
2015) -- as its soft-argmax displacement divided by the entry's age (m/s on the grid axes) and the match
confidence: after the ego-motion warp the static world matches at displacement 0 and an object moving at
v where it was, −v·age. The GRU updates the hidden map; its output is added
residually to the current BEV. The new state is returned, never kept inside the module: the caller (trainer,
``hydranet.eval.Streamer``, the car's runtime through the exported graph) owns it. An all-zero ``TemporalState`` is
the reset (no history; the first frame of a scene) — the module then sees zero features, zero masks, and
behaves as a single-frame model.

Warp: for current cell centre ``p`` (ego, ground plane) the entry is sampled at
``T_entry_from_curr @ p`` with ``T_entry_from_curr = inv(T_world_from_entry) @ T_world_from_curr``
(BEVDet4D's alignment; the same as the old one-frame ``warp_bev`` here). Everything is matmuls,
``where`` and ``grid_sample`` (ONNX opset 16): the push decisions are masks, not Python branches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydranet.geometry import BevGrid
from hydranet.model.tracing import tracing

AGE_SCALE_S = 1.0  # entry ages enter the network in seconds / AGE_SCALE_S
_OUTSIDE = 4.0  # a grid_sample coordinate whose every bilinear tap lies in the zero padding (the map spans [-1, 1])


def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid transforms ``[..., 4, 4]`` with transpose and matmul only (exportable)."""
    R = T[..., :3, :3].transpose(-1, -2)
    t = -(R @ T[..., :3, 3:])
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom = bottom + torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    return torch.cat([torch.cat([R, t], -1), bottom], -2)


class BevWarp(nn.Module):
    """Resamples BEV maps on ``grid`` from a previous ego frame at the current frame's cell centres.

    ``forward(prev_bev [B, C, R, C'], T_prev_from_curr [B, 4, 4], held [B] | None) -> (warped, valid)``:
    ``T_prev_from_curr`` maps current-ego points into the previous ego frame; ``held`` (0/1, default all 1) says
    which maps hold anything. ``valid [B, 1, R, C']`` float32 is 1 where a cell centre lands inside the previous
    grid of a held map; ``warped [B, C, R, C']`` float32 is the bilinear sample (``grid_sample``, zero padding)
    there and exactly 0 elsewhere. Cells describe the ground-plane column above them, so the motion is taken at
    z = 0.

    What does not change from frame to frame is built once: every cell centre in ego (x, y, 1), and the affine
    map from ego metres to ``grid_sample``'s coordinates (align_corners=False), read off the grid's own
    ``BevGrid.metres_to_index`` at three points. A frame then costs one 2×3 matrix product per map, one
    ``bmm`` over the cells and the sample. Coordinates stay fp32 whatever the feature dtype (a bf16 coordinate
    is off by up to half a cell on a 64-cell grid).
    """

    def __init__(self, grid: BevGrid):
        super().__init__()
        self.grid = grid
        R, C = grid.shape
        centres = grid.cell_centres(torch.float32).reshape(-1, 2)
        self.register_buffer("centres", torch.cat([centres, torch.ones(len(centres), 1)], 1), persistent=False)
        basis = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # ego (x, y): the origin, +x, +y
        row, col = grid.metres_to_index(basis[:, 0], basis[:, 1])
        at = torch.stack([col / C * 2.0 - 1.0, row / R * 2.0 - 1.0])  # [2 (gx, gy), 3 points]
        linear = at[:, 1:] - at[:, :1]  # [2, 2]: d(gx, gy) / d(x, y)
        self.register_buffer("sample_linear", linear, persistent=False)
        self.register_buffer("sample_offset", torch.cat([torch.zeros(2, 2), at[:, :1]], 1), persistent=False)

    def forward(self, prev_bev: Tensor, T_prev_from_curr: Tensor, held: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B = prev_bev.shape[0]
        R, C = self.grid.shape
        T = T_prev_from_curr.float()
        plane = torch.cat([T[:, :2, :2], T[:, :2, 3:]], -1)  # [B, 2, 3]: previous (x, y) from current (x, y, 1)
        sample_from_curr = self.sample_linear @ plane + self.sample_offset  # [B, 2, 3]
        sample = self.centres @ sample_from_curr.transpose(-1, -2)  # [B, P, 2] (gx, gy)
        valid = sample.abs().amax(-1, keepdim=True) <= 1.0  # [B, P, 1]
        if held is not None:
            valid = valid & (held[:, None, None] > 0.5)
        # An invalid cell samples far outside the map, where every bilinear tap is zero padding: the mask costs
        # a select over the coordinates instead of a multiply over every channel of the maps.
        sample = torch.where(valid, sample, torch.full_like(sample, _OUTSIDE))
        warped = F.grid_sample(prev_bev.float(), sample.reshape(B, R, C, 2), mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        return warped, valid.reshape(B, 1, R, C).float()


def warp_bev(prev_bev: Tensor, T_prev_from_curr: Tensor, grid: BevGrid) -> tuple[Tensor, Tensor]:
    """Resample ``prev_bev [B, C, R, C']`` (on ``grid`` in a previous ego frame) at the current frame's
    cell centres (``BevWarp``). ``T_prev_from_curr [B, 4, 4]`` maps current-ego points into that previous ego frame.

    Returns the warped map in ``prev_bev``'s dtype, zeros where the source lies outside the previous grid, and
    the validity mask ``[B, 1, R, C']``.
    """
    warped, valid = BevWarp(grid).to(prev_bev.device)(prev_bev, T_prev_from_curr)
    return warped.to(prev_bev.dtype), valid.to(prev_bev.dtype)


@dataclass
class TemporalState:
    """The memory between two frames (batch ``B``, ``Q = time_queue + space_queue`` entries,
    ``C = bev_channels`` on the ``h × w`` fusion grid). All float32.

    hidden       [B, C, h, w]     ConvGRU state, in the ego frame of ``hidden_pose``
    hidden_pose  [B, 4, 4]        T_world_from_ego of the frame the hidden map is expressed in
    queue        [B, Q, C, h, w]  BEV maps: time-queue entries first (newest first), then space-queue
    queue_pose   [B, Q, 4, 4]     T_world_from_ego of each entry
    queue_time   [B, Q]           timestamp of each entry, seconds
    queue_valid  [B, Q]           1 = the entry holds a frame, 0 = empty slot
    since_push   [B]              frames since the last time-queue push

    The field order is the order of the state inputs/outputs of the exported graph.
    """

    hidden: Tensor
    hidden_pose: Tensor
    queue: Tensor
    queue_pose: Tensor
    queue_time: Tensor
    queue_valid: Tensor
    since_push: Tensor

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in exported-graph order."""
        return tuple(f.name for f in fields(cls))

    def tensors(self) -> tuple[Tensor, ...]:
        """The fields as a tuple, in ``names()`` order."""
        return tuple(getattr(self, n) for n in self.names())

    @classmethod
    def from_tensors(cls, tensors: tuple[Tensor, ...] | list[Tensor]) -> TemporalState:
        """Build from tensors in ``names()`` order; ``ValueError`` when the count is wrong."""
        if len(tensors) != len(cls.names()):
            raise ValueError(f"TemporalState needs {len(cls.names())} tensors {cls.names()}, got {len(tensors)}")
        return cls(*tensors)

    def detach(self) -> TemporalState:
        """A copy with every tensor detached (truncated backprop through time)."""
        return TemporalState(*(t.detach() for t in self.tensors()))

    def to(self, device: torch.device | str) -> TemporalState:
        """A copy with every tensor on ``device``."""
        return TemporalState(*(t.to(device) for t in self.tensors()))

    @property
    def batch_size(self) -> int:
        """B, the batch size of the state."""
        return self.hidden.shape[0]

    def nbytes(self) -> int:
        """Memory the state holds (what the car's runtime must keep per camera rig)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def reset_where(self, reset: Tensor) -> TemporalState:
        """Zero the samples where ``reset [B]`` (bool) is true, e.g. at a scene boundary."""
        keep = (~reset.bool()).float()

        def mask(t: Tensor) -> Tensor:
            return t * keep.to(t.device).view(-1, *([1] * (t.ndim - 1)))

        return TemporalState(*(mask(t) for t in self.tensors()))


def ego_velocity(T_world_from_ego: Tensor, T_world_from_past: Tensor, dt: Tensor, valid: Tensor) -> Tensor:
    """The ego's mean velocity since a past pose, in the current ego frame: ``[B, 2]`` (vx, vy) m/s, float32.

    ``T_world_from_ego``, ``T_world_from_past`` ``[B, 4, 4]``; ``dt [B]`` seconds between them (clamped to
    >= 0.05 s, a frame at 20 Hz); ``valid [B]`` 0/1, zero velocity where the past pose is an empty slot.
    This is the odometry a car has (BEVFormer feeds the CAN bus' ego motion to its BEV queries, Li et al.,
    ECCV 2022): a single frame cannot know it, and the surrounding traffic's speed is tied to the ego's."""
    R = T_world_from_ego[:, :3, :3].float()
    moved = (T_world_from_ego[:, :3, 3] - T_world_from_past[:, :3, 3]).float()  # world frame, metres
    v = (R.transpose(-1, -2) @ moved[..., None])[:, :2, 0] / dt.float().clamp(min=0.05)[:, None]
    return v * valid.float()[:, None]


def unit_channels(x: Tensor, dim: int = 1, eps: float = 1e-6) -> Tensor:
    """``x / max(||x||, eps)`` along ``dim``, float32: ``F.normalize``'s result, from a sum of squares and an
    ``rsqrt``. ``F.normalize`` reduces with ``linalg_vector_norm``, which over an NCHW map's strided channel axis
    is several times slower on CPU."""
    x = x.float()
    return x * torch.rsqrt((x * x).sum(dim, keepdim=True).clamp_min(eps * eps))


def local_correlation(current: Tensor, previous: Tensor, radius: int) -> Tensor:
    """Cosine similarity of ``current [..., C, h, w]`` with ``previous [..., C, h, w]`` (leading dimensions
    broadcast) shifted by every displacement ``(dy, dx)`` in ``[-radius, radius]²`` (row-major):
    ``[..., (2r+1)², h, w]``, in [-1, 1]; 0 where the shifted map falls outside (zero padding). Computed in fp32
    with pad and slices only (exportable to ONNX). Follows the correlation layer of FlowNet (Dosovitskiy et al.,
    ICCV 2015)."""
    return _correlate(unit_channels(current, -3), unit_channels(previous, -3), radius)


def _correlate(cur: Tensor, prev: Tensor, radius: int) -> Tensor:
    """``local_correlation`` of maps already normalised along channels (dimension -3)."""
    prev = F.pad(prev, (radius, radius, radius, radius))
    h, w = cur.shape[-2:]
    k = 2 * radius + 1
    return torch.stack([(cur * prev[..., dy:dy + h, dx:dx + w]).sum(-3) for dy in range(k) for dx in range(k)], -3)


def soft_flow(correlation: Tensor, radius: int, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Expected displacement under ``softmax(beta * correlation)`` over the ``(2r+1)²`` displacement
    channels of ``local_correlation`` (row-major ``(dy, dx)``): ``([B, 2, h, w]`` (dy, dx) in cells, float32;
    ``[B, 1, h, w]`` the largest displacement probability, the match's confidence). A soft-argmax, as in
    the differentiable flow read-outs of PWC-Net/RAFT-style cost volumes; exportable (softmax, sums)."""
    k = 2 * radius + 1
    offsets = torch.arange(k, dtype=torch.float32, device=correlation.device) - radius
    dy = offsets.repeat_interleave(k).view(1, -1, 1, 1)
    dx = offsets.repeat(k).view(1, -1, 1, 1)
    prob = torch.softmax(correlation.float() * beta, dim=1)
    flow = torch.cat([(prob * dy).sum(1, keepdim=True), (prob * dx).sum(1, keepdim=True)], 1)
    return flow, prob.amax(1, keepdim=True)


class ConvGRUCell(nn.Module):
    """Convolutional GRU (Ballas et al. 2016): gates from 3×3 convs over ``[input, hidden]``."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, 3, 1, 1)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, 3, 1, 1)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1.0 - z) * h + z * n


class TemporalMemory(nn.Module):
    """Time + space queues of BEV maps, warped to the current ego frame and fused by a ConvGRU.

    ``forward(bev [B, C, h, w], T_world_from_ego [B, 4, 4], timestamp [B] s, state) -> (bev', state')``.
    ``bev'`` has the shape of ``bev``. Raises ``ValueError`` on inputs whose shapes disagree with the state.
    """

    def __init__(self, grid: BevGrid, channels: int, time_queue: int = 2, space_queue: int = 2,
                 push_every_frames: int = 2, push_every_metres: float = 2.0, correlation_radius: int = 0):
        super().__init__()
        if correlation_radius < 0:
            raise ValueError(f"temporal: correlation_radius must be >= 0, got {correlation_radius}")
        self.correlation_radius = correlation_radius
        n_corr = 3 * time_queue if correlation_radius else 0  # per time-queue entry: motion (2) + confidence
        if time_queue < 1 or space_queue < 0 or push_every_frames < 1 or push_every_metres <= 0:
            raise ValueError(f"temporal: need time_queue >= 1, space_queue >= 0, push_every_frames >= 1, "
                             f"push_every_metres > 0; got {time_queue}, {space_queue}, {push_every_frames}, "
                             f"{push_every_metres}")
        self.grid = grid
        self.warp = BevWarp(grid)
        self.channels = channels
        self.time_queue, self.space_queue = time_queue, space_queue
        self.push_every_frames, self.push_every_metres = push_every_frames, float(push_every_metres)
        q = time_queue + space_queue
        # current + q warped entries + q validity masks + q ages + the ego's velocity (2) + the motion read-out,
        # mixed per cell (1×1; the ConvGRU's 3×3 convs then compare neighbouring cells).
        # Named ``mix`` since the memory moved after the encoder (it was ``reduce``): a video checkpoint of the
        # old wiring then fails to load with a CheckpointError naming the keys, instead of loading silently.
        self.mix = nn.Sequential(nn.Conv2d(channels * (q + 1) + 2 * q + 2 + n_corr, channels, 1, bias=False),
                                 nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        # Softmax sharpness of the motion read-out, learned (log scale); cosine similarities lie in [-1, 1].
        self.log_beta = nn.Parameter(torch.tensor(math.log(10.0))) if correlation_radius else None
        self.gru = ConvGRUCell(channels, channels)
        self.out = nn.Conv2d(channels, channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity: a single-frame model plus nothing
        nn.init.zeros_(self.out.bias)

    @property
    def queue_length(self) -> int:
        """Q = ``time_queue + space_queue``, the number of queued BEV maps."""
        return self.time_queue + self.space_queue

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> TemporalState:
        """The reset state: no history."""
        R, C = self.grid.shape
        q, c = self.queue_length, self.channels
        z = torch.zeros
        return TemporalState(z(batch_size, c, R, C, device=device), z(batch_size, 4, 4, device=device),
                             z(batch_size, q, c, R, C, device=device), z(batch_size, q, 4, 4, device=device),
                             z(batch_size, q, device=device), z(batch_size, q, device=device),
                             z(batch_size, device=device))

    def _check(self, bev: Tensor, T: Tensor, timestamp: Tensor, state: TemporalState) -> None:
        B = bev.shape[0]
        want = {"bev": ((B, self.channels, *self.grid.shape), tuple(bev.shape)),
                "T_world_from_ego": ((B, 4, 4), tuple(T.shape)), "timestamp": ((B,), tuple(timestamp.shape)),
                "state.hidden": ((B, self.channels, *self.grid.shape), tuple(state.hidden.shape)),
                "state.queue": ((B, self.queue_length, self.channels, *self.grid.shape), tuple(state.queue.shape))}
        for name, (expected, got) in want.items():
            if expected != got:
                raise ValueError(f"temporal: {name} must have shape {expected}, got {got}")

    def forward(self, bev: Tensor, T_world_from_ego: Tensor, timestamp: Tensor,
                state: TemporalState) -> tuple[Tensor, TemporalState]:
        if not tracing():
            self._check(bev, T_world_from_ego, timestamp, state)
        B, C, R, W = bev.shape
        Q = self.queue_length
        T_curr = T_world_from_ego.float()
        t_now = timestamp.float()

        # Every entry and the hidden map, each warped from its own ego frame into the current one, in one
        # grid_sample (a batch of B * (Q + 1) maps: at a 32×32 grid each op's fixed cost is what counts).
        maps = torch.cat([state.queue, state.hidden[:, None]], 1)  # [B, Q + 1, C, h, w]
        poses = torch.cat([state.queue_pose, state.hidden_pose[:, None]], 1)  # [B, Q + 1, 4, 4]
        T_entry_from_curr = rigid_inverse(poses) @ T_curr[:, None]  # [B, Q + 1, 4, 4]
        # A cell reads an entry where its centre lands on the entry's grid and the slot holds a frame; it reads
        # the hidden map once there is any history (the newest slot is filled).
        held = torch.cat([state.queue_valid, state.queue_valid[:, :1]], 1)  # [B, Q + 1]
        warped_all, valid_all = self.warp(maps.reshape(B * (Q + 1), C, R, W), T_entry_from_curr.reshape(-1, 4, 4),
                                          held.reshape(-1))
        warped_all = warped_all.reshape(B, Q + 1, C, R, W)
        warped, h_prev, valid = warped_all[:, :Q], warped_all[:, Q], valid_all.reshape(B, Q + 1, R, W)[:, :Q]
        age = ((t_now[:, None] - state.queue_time) / AGE_SCALE_S * state.queue_valid)[:, :, None, None]
        ego_v = ego_velocity(T_curr, state.queue_pose[:, 0], t_now - state.queue_time[:, 0], state.queue_valid[:, 0])
        parts = [bev, warped.reshape(B, Q * C, R, W).to(bev.dtype), valid.to(bev.dtype), (age * valid).to(bev.dtype),
                 ego_v[:, :, None, None].expand(B, 2, R, W).to(bev.dtype)]
        if self.correlation_radius:
            parts.append(self._motion(bev, warped, valid, age).to(bev.dtype))
        # The GRU runs channels-last, the layout the BEV encoder hands over: oneDNN's 3×3 convolutions take it as
        # it is, where an NCHW map is reordered into and out of its blocked layout at every conv.
        x = self.mix(torch.cat(parts, 1)).contiguous(memory_format=torch.channels_last)
        h = self.gru(x, h_prev.to(x.dtype).contiguous(memory_format=torch.channels_last))
        fused = bev + self.out(h)

        # Push: the time queue every k frames, the space queue every d metres (an empty queue always takes one).
        # Every field of both queues moves in one shift: slot i takes slot i - 1, each queue's first slot the new
        # entry, where that queue pushes.
        tq = self.time_queue
        since = state.since_push + 1.0
        push_t = (since >= self.push_every_frames) | (state.queue_valid[:, 0] < 0.5)
        push = push_t[:, None].expand(B, tq)
        if self.space_queue:
            moved = (T_curr[:, :2, 3] - state.queue_pose[:, tq, :2, 3]).pow(2).sum(-1).sqrt()
            push_s = (moved >= self.push_every_metres) | (state.queue_valid[:, tq] < 0.5)
            push = torch.cat([push, push_s[:, None].expand(B, Q - tq)], 1)  # [B, Q]
        entry = bev.detach().float() if not self.training else bev.float()

        def shift(old: Tensor, new: Tensor) -> Tensor:
            queues = [new[:, None], old[:, :tq - 1]]
            if self.space_queue:
                queues += [new[:, None], old[:, tq:Q - 1]]
            return torch.where(push.view(B, Q, *([1] * (old.ndim - 2))), torch.cat(queues, 1), old)

        new = TemporalState(hidden=h.float(), hidden_pose=T_curr, queue=shift(state.queue, entry),
                            queue_pose=shift(state.queue_pose, T_curr), queue_time=shift(state.queue_time, t_now),
                            queue_valid=shift(state.queue_valid, torch.ones_like(t_now)),
                            since_push=torch.where(push_t, torch.zeros_like(since), since))
        return fused, new

    def _motion(self, bev: Tensor, warped: Tensor, valid: Tensor, age: Tensor) -> Tensor:
        """Per time-queue entry, where each cell's content was in that entry, divided by the entry's age, and the
        match confidence: ``[B, 3 * time_queue, h, w]`` float32 (per entry: d_row, d_col in m/s, confidence),
        zero where the entry is empty or off its grid. After the ego-motion warp the static world matches at
        displacement 0; an object moving at v matches where it was, ``-v * age``. The grid's (row, col) axes
        point along ego -x and -y, so the read-out is the object's (vx, vy) in the ego frame."""
        assert self.log_beta is not None
        B, _, C, h, w = warped.shape
        tq = self.time_queue
        # The current map, normalised once and broadcast over the time-queue entries; both in the NCHW layout
        # (the encoder hands over a channels-last map: mixed layouts made each product a strided walk).
        current = unit_channels(bev.contiguous())[:, None]  # [B, 1, C, h, w]
        entries = unit_channels(warped[:, :tq], 2)  # [B, tq, C, h, w]
        correlation = _correlate(current, entries, self.correlation_radius)  # [B, tq, (2r+1)², h, w]
        flow, confidence = soft_flow(correlation.reshape(B * tq, -1, h, w), self.correlation_radius,
                                     self.log_beta.exp())
        seconds = (age[:, :tq] * AGE_SCALE_S).clamp(min=0.05)[:, :, None]  # [B, tq, 1, 1, 1]: at least a frame old
        mask = valid[:, :tq, None]  # [B, tq, 1, h, w]
        velocity = flow.reshape(B, tq, 2, h, w) * (self.grid.cell / seconds) * mask
        return torch.cat([velocity, confidence.reshape(B, tq, 1, h, w) * mask], 2).reshape(B, 3 * tq, h, w)
