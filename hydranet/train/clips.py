"""Training on clips: K consecutive frames of one scene per sequence, truncated back-propagation through time.

How a clip is drawn: the task scheduler (``train/scheduler.py``) still picks each micro-step's task and
sample indices, so interleaving, per-task index lists, DDP slicing and exact resume are unchanged; each
drawn index becomes the clip of ``length`` consecutive frames of its scene that *contains* it (ending at
it, or shifted forward near the scene's start). A clip never crosses a scene boundary, and the memory
starts from the reset state at every clip — the scene boundary reset, and the truncation of BPTT at
``length`` frames. The first ``burn_in`` frames of a clip run without gradient and without loss, to
fill the memory before the frames that are learnt from.

Partial labels stay per frame: each frame's batch has its own presence masks, and a task's clip loss
is the mean of its per-frame losses weighted by the number of labelled samples in each frame.

Which samples are consecutive comes from metadata (the synthetic world's index arithmetic, the shard's
``sample.json``), or from loading the samples once for any other source with ``scene_id`` and
``frame_index``. A scene shorter than ``length`` cannot yield a clip: an error names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from hydranet.data import Batch, clip_starts, collate, sequence_keys
from hydranet.train.interrupt import workers_ignore_stop_signals
from hydranet.train.precision import autocast
from hydranet.train.scheduler import SchedulerBatchSampler, TaskScheduler
from hydranet.train.trainer import Trainer, camera_dropout_mask


class ClipBatchSampler(SchedulerBatchSampler):
    """Each drawn index → its clip; yields ``B * length`` indices, frame-major (frame 0 of every clip first)."""

    def __init__(self, scheduler: TaskScheduler, batch_size: int, rank: int, world_size: int,
                 total_micro_steps: int, starts: np.ndarray, length: int) -> None:
        super().__init__(scheduler, batch_size, rank, world_size, total_micro_steps)
        self.starts, self.length = starts, length

    def __iter__(self) -> Iterator[list[int]]:
        for indices in super().__iter__():
            first = [int(self.starts[i]) for i in indices]
            yield [s + k for k in range(self.length) for s in first]


@dataclass
class Clip:
    """``frames[k]`` is the batch of frame ``k`` of every clip (``B`` sequences); ``burn_in`` leading frames
    are run without loss. ``present`` concatenates the loss frames' presence masks (what the trainer counts)."""

    frames: list[Batch]
    burn_in: int

    @property
    def present(self) -> dict[str, Tensor]:
        """``{label: bool [B * loss frames]}``: the loss frames' presence masks, concatenated frame by frame
        (a label absent from a frame counts as missing there)."""
        keys = {k for f in self.frames[self.burn_in:] for k in f.present}
        return {k: torch.cat([f.present.get(k, torch.zeros(len(f), dtype=torch.bool))
                              for f in self.frames[self.burn_in:]]) for k in keys}

    def __len__(self) -> int:
        return len(self.frames[0])

    def to(self, device: torch.device | str) -> Clip:
        """A copy with every frame's batch on ``device``."""
        return Clip([f.to(device) for f in self.frames], self.burn_in)


def collate_clip(samples: list[Any], length: int, burn_in: int) -> Clip:
    """Frame-major samples (``ClipBatchSampler`` order) → ``Clip``; checks each clip is one scene, in order."""
    B = len(samples) // length
    frames = [collate(samples[k * B:(k + 1) * B]) for k in range(length)]
    for b in range(B):
        seq = [(f.scene_id[b], int(f.frame_index[b])) for f in frames]
        if any(s != seq[0][0] or fi != seq[0][1] + k for k, (s, fi) in enumerate(seq)):
            raise ValueError(f"clip {b} is not {length} consecutive frames of one scene: {seq}")
    return Clip(frames, burn_in)


class ClipTrainer(Trainer):
    """``Trainer`` on clips (``train.clip``): the video memory is carried through each clip's frames.

    A single-frame model trains on the same clips frame by frame (``forward``), so a temporal and a
    single-frame run at one seed see exactly the same frames in the same order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        clip = self.tc.clip
        if clip is None:
            raise ValueError("ClipTrainer needs train.clip (length, burn_in)")
        self.length, self.burn_in = clip.length, clip.burn_in
        scenes, frames = sequence_keys(self.train_set)
        self.starts = clip_starts(scenes, frames, self.length)

    def _loader(self) -> Iterator[Clip]:  # type: ignore[override]
        total = self.tc.steps * self.tc.grad_accum
        sampler = ClipBatchSampler(self.scheduler, self.tc.batch_size, self.dist.rank, self.dist.world_size, total,
                                   self.starts, self.length)
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + self.scheduler.micro_step)
        loader = DataLoader(self.train_set, batch_sampler=sampler,
                            collate_fn=partial(collate_clip, length=self.length, burn_in=self.burn_in),
                            num_workers=self.tc.num_workers, generator=gen, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, prefetch_factor=2 if self.tc.num_workers else None,
                            worker_init_fn=workers_ignore_stop_signals)  # Ctrl-C: the trainer stops, not a worker
        return iter(loader)

    def task_losses(self, batch: Any, tasks: list[str]) -> dict[str, Tensor]:
        """Each task's clip loss (0-d float32): the mean of its per-frame losses over the frames after
        ``burn_in``, weighted by each frame's labelled samples. A temporal model carries its state through
        the clip (``forward_step``; detached after burn-in frames), a single-frame one runs frame by frame."""
        clip: Clip = batch
        model = self.model
        temporal = bool(getattr(model, "is_temporal", False))
        state = model.init_state(len(clip), self.device) if temporal else None
        sums: dict[str, Tensor] = {}
        counts = {t: 0.0 for t in tasks}
        for k, frame in enumerate(clip.frames):
            learn = k >= clip.burn_in
            if not learn and not temporal:  # burn-in only fills a memory; a single-frame model has none
                continue
            with (nullcontext() if learn else torch.no_grad()), autocast(self.device, self.bf16):
                if temporal:
                    seed = (self.tc.seed, self.step, self.dist.rank)  # the masks Trainer.forward would draw
                    mask = camera_dropout_mask(frame, self.tc.camera_dropout, seed) \
                        if model.training and self.tc.camera_dropout > 0 else None
                    outputs, state = model.forward_step(frame.images, frame.intrinsics, frame.T_ego_from_cam,
                                                        frame.T_world_from_ego, frame.timestamp.float(), state,
                                                        tasks, camera_valid=mask)
                else:
                    outputs = self.forward(frame, tasks)  # camera dropout as in single-frame training
            if not learn:
                if state is not None:
                    state = state.detach()
                continue
            for t in tasks:
                n = float(frame.present.get(self.tasks[t].label, torch.zeros(1, dtype=torch.bool)).sum())
                loss = self.tasks[t].loss(outputs[t], frame)["loss"].float()
                sums[t] = sums.get(t, 0.0) + loss * n  # type: ignore[assignment]
                counts[t] += n
        return {t: sums[t] / max(counts[t], 1.0) for t in tasks}

