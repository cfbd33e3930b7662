"""Auxiliary supervision of the video memory's motion read-out with the objects' velocity labels.

The memory reads each cell's motion from a cost volume between the current BEV features and each warped
time-queue entry (``hydranet.model.temporal``, ``correlation_radius > 0``). Trained only through the
heads, the features it correlates are whatever detection needs, and nothing asks them to be *matchable*
from one frame to the next. This loss asks exactly that: at the fusion cell holding each labelled
object's centre, every valid entry's read-out velocity (ego vx, vy in m/s) should be the object's
velocity label -- the static world 0, a moving car its speed. Direct supervision of the matching, as
PWC-Net/RAFT supervise their cost-volume flow, here with the box velocities a 3D label already has
(nuScenes' ``velocity``), so no extra annotation is needed.

The clip trainer adds ``train.clip.motion_weight`` × this loss to the ``objects3d`` loss of each frame
that learns (``hydranet/train/clips.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hydranet.geometry import BevGrid
from hydranet.model.temporal import MotionReadout


def motion_readout_loss(readout: MotionReadout, targets: list[dict[str, Any] | None], grid: BevGrid) -> Tensor | None:
    """Mean L1 (m/s, summed over vx and vy) between the read-out velocity at each object's centre cell and
    its velocity label, over the objects with a finite velocity on ``grid`` and every time-queue entry valid
    at that cell; None when there is none (an unlabelled frame, no history yet).

    ``readout``: ``MotionReadout`` on ``grid`` (the memory's fusion grid, ego frame); ``targets``: per sample
    the ``objects3d`` target (``boxes [M, 7]`` ego metres, ``velocity [M, 2]`` ego m/s, NaN = unknown) or
    None. Raises ``ValueError`` when ``len(targets)`` is not the read-out's batch size."""
    velocity, valid = readout.velocity, readout.valid
    if len(targets) != velocity.shape[0]:
        raise ValueError(f"motion supervision: {len(targets)} targets for a read-out of batch {velocity.shape[0]}")
    errors, weights = [], []
    for b, t in enumerate(targets):
        if t is None or len(t["boxes"]) == 0 or "velocity" not in t:
            continue
        boxes = t["boxes"].reshape(-1, 7).float().to(velocity.device)
        target = t["velocity"].reshape(-1, 2).float().to(velocity.device)
        rows, cols, inside = grid.cell_indices(boxes[:, 0], boxes[:, 1])
        keep = inside & torch.isfinite(target).all(-1)
        if not bool(keep.any()):
            continue
        rows, cols, target = rows[keep], cols[keep], target[keep]
        read = velocity[b][:, :, rows, cols].float()  # [tq, 2, M]
        errors.append((read - target.T[None]).abs().sum(1))  # [tq, M]
        weights.append(valid[b][:, rows, cols].float())
    if not errors:
        return None
    err, w = torch.cat(errors, 1), torch.cat(weights, 1)
    if float(w.sum()) == 0.0:
        return None
    return (err * w).sum() / w.sum()
