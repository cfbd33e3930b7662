"""The multi-task training loop.

One optimizer step = ``grad_accum`` micro-batches. Each micro-batch is assigned a task by the
``TaskScheduler`` and drawn from that task's index list (this rank's slice of the global batch);
the losses of the tasks whose labels are present in the (global) micro-batch are handed to the
balancing strategy, which accumulates gradients: in ``DistributedDataParallel`` under torchrun, with
``no_sync()`` on all but the last micro-step, except for PCGrad and GradNorm, which all-reduce per-task
gradients themselves (balancing.py says why). Then gradients are clipped and the optimizer steps
(``train.optimizer``: AdamW, or Muon for the hidden layers' kernels; ``hydranet.train.optim``).

A non-finite loss or gradient on any rank skips the whole step on every rank (the decision is
all-reduced), and the skip is counted, logged and checkpointed; BatchNorm running statistics the
skipped forward passes moved are restored. ``train.max_consecutive_skips`` skips in a row stop the
run with ``NonFiniteTrainingError`` naming the step and the tasks. Rank 0 alone logs (TensorBoard +
rich progress bar with per-task losses) and writes checkpoints (what a checkpoint of a run holds, and
how resume restores it exactly, is ``training_state.py``).

``Trainer.forward`` is the one place the model is called, so sub-graph training can substitute
``model.forward_features`` on cached features without touching the loop.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from hydranet.data import Batch, collate
from hydranet.eval import dataset_batches, evaluate
from hydranet.json_files import dumps
from hydranet.tasks import Task
from hydranet.train import distributed
from hydranet.train.balancing import create_balancer
from hydranet.train.config import Config
from hydranet.train.interrupt import ending_workers, stop_requested, workers_ignore_stop_signals
from hydranet.train.logging import TrainLogger
from hydranet.train.optim import build_optimizer, lr_at, muon_exempt, set_lr
from hydranet.train.precision import autocast, use_bf16
from hydranet.train.scheduler import ALL, SchedulerBatchSampler, TaskScheduler, build_index_lists, label_presence
from hydranet.train.sync_batchnorm import convert_sync_batchnorm
from hydranet.train.training_state import resume_training_state, save_training_state


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps were skipped for non-finite losses or gradients; names the step and tasks."""


def freeze(model: nn.Module, modules: list[str]) -> list[str]:
    """``requires_grad=False`` for the named modules (``trunk``, ``neck``, ``fusion``, ``heads.x``).
    Returns the names that exist; ``Trainer.train_mode`` keeps them in eval mode (BatchNorm frozen)."""
    found = []
    for name in modules:
        try:
            mod = model.get_submodule(name)
        except AttributeError:  # e.g. no fusion module when no BEV task is configured
            continue
        for p in mod.parameters():
            p.requires_grad_(False)
        found.append(name)
    return found


def camera_dropout_mask(batch: Batch, p: float, seed: tuple[int, ...]) -> Tensor:
    """``camera_valid`` bool ``[B, N]`` with each camera failed with probability ``p`` (at least one camera
    of each sample kept), for training fusion to survive a dead camera (``train.camera_dropout``).
    Seeded by (seed, step, rank) and the batch's frame indices, so a resumed run draws the same masks."""
    b, n = batch.images.shape[:2]
    g = torch.Generator().manual_seed(hash((*seed, *batch.frame_index.tolist())) & 0x7FFF_FFFF_FFFF_FFFF)
    valid = torch.rand(b, n, generator=g) >= p
    keep = torch.randint(0, n, (b,), generator=g)
    valid[torch.arange(b), keep] |= ~valid.any(1)  # never all cameras of a sample
    return valid.to(batch.images.device)


class Trainer:
    """The multi-task training loop (module docstring): ``fit`` runs ``train.steps`` optimizer steps.

    ``model``: a ``HydraNet`` (or any module with its call signature) whose ``task_objects`` (or ``tasks``)
    give the losses; ``train_tasks`` (default: all) are trained, the other heads frozen; ``frozen`` names
    further modules to freeze; ``index_lists`` (default: every sample labelled for the task) are each task's
    sample indices; ``eval_set`` feeds the periodic ``evaluate``. Rank 0 writes logs and checkpoints under
    ``out_dir``. Raises ``ValueError`` for a task the model lacks or when every parameter is frozen.
    """

    def __init__(self, cfg: Config, model: nn.Module, train_set: Dataset, out_dir: str | Path, *,
                 tasks: dict[str, Task] | None = None, train_tasks: list[str] | None = None,
                 index_lists: dict[str, np.ndarray] | None = None, eval_set: Dataset | None = None,
                 frozen: list[str] | None = None, model_config: dict[str, Any] | None = None,
                 groups: np.ndarray | None = None,
                 dist_info: distributed.DistInfo | None = None, device: torch.device | None = None,
                 progress: bool = True) -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.out_dir = Path(out_dir)
        self.dist = dist_info or distributed.DistInfo()
        self.device = device or torch.device("cpu")
        if self.tc.sync_batchnorm and self.dist.enabled:
            model = convert_sync_batchnorm(model, self.device)
        self.model = model.to(self.device)
        if self.tc.channels_last:
            # Conv weights NHWC: oneDNN/cuDNN then run every convolution (trunk, neck, BEV encoder, heads)
            # channels-last, whatever the input's layout; 1.5x faster in fp32 on the development CPU.
            self.model.to(memory_format=torch.channels_last)
        self.tasks: dict[str, Task] = dict(tasks if tasks is not None else model.task_objects)
        self.train_tasks = sorted(train_tasks or self.tasks)
        unknown = sorted(set(self.train_tasks) - set(self.tasks))
        if unknown:
            raise ValueError(f"tasks {unknown} are not in the model (model tasks: {sorted(self.tasks)})")
        heads = getattr(model, "heads", None)
        frozen_heads = [f"heads.{t}" for t in self.tasks if t not in self.train_tasks and heads is not None]
        self.frozen = freeze(model, list(frozen or []) + frozen_heads)
        self.model_config = model_config
        self.train_set, self.eval_set = train_set, eval_set
        self.progress = progress and self.dist.is_main

        if index_lists is None:
            labels = {t: self.tasks[t].label for t in self.train_tasks}
            presence = label_presence(train_set, sorted(set(labels.values())))
            index_lists = build_index_lists(presence, labels, {}, {}, self.tc.seed)
        index_lists = {t: index_lists[t] for t in self.train_tasks}
        self.scheduler = TaskScheduler(index_lists, self.tc.scheduler.kind, self.tc.scheduler.temperature,
                                       self.tc.seed, num_samples=len(train_set),  # type: ignore[arg-type]
                                       groups=groups)

        self.trainable = [p for p in model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("nothing to train: every parameter is frozen")
        self.balancer = create_balancer(self.tc.balancing, self.train_tasks, model, self.trainable,
                                        self.tc.seed).to(self.device)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(named, self.tc, extra_no_decay=list(self.balancer.parameters()),
                                         exempt=muon_exempt(model))
        by_id = {id(p): n for n, p in named} | {id(p): f"balancer.{n}" for n, p in self.balancer.named_parameters()}
        self.param_names = [by_id[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

        self.bf16 = use_bf16(self.tc.precision, self.device)  # auto: bf16 where the hardware has it natively
        self.step = 0
        self.skipped_steps = 0
        self.stopped_early = False
        self.consecutive_skips = 0  # skipped steps since the last good one (train.max_consecutive_skips)
        self.nonfinite_tasks: set[str] = set()  # tasks whose loss was non-finite during that streak
        self.resume_note: str | None = None  # set by resume() when it fell back to an older checkpoint
        self.resumed_from: Path | None = None  # the checkpoint resume() loaded
        self.resuming = False  # resume() was called: fit() continues the run's logs from self.step
        self.history: list[dict[str, Any]] = []
        self.eval_history: list[dict[str, Any]] = []
        distributed.broadcast_module(model)  # every rank starts from rank 0's weights
        # DDP unless the strategy combines per-task gradients (PCGrad/GradNorm reduce them themselves)
        self.ddp = distributed.wrap_ddp(self.model) if self.dist.enabled and not self.balancer.per_task_grads else None
        self.balancer.model_reduced_by_ddp = self.ddp is not None

    # -- model call and modes ------------------------------------------------------------------

    def forward(self, batch: Batch, tasks: list[str]) -> dict[str, dict[str, Tensor]]:
        """``{task: {key: Tensor [B, ...]}}`` of the model on ``batch`` for ``tasks``; in train mode with
        ``train.camera_dropout > 0`` a seeded ``camera_valid`` mask fails random cameras."""
        mask = camera_dropout_mask(batch, self.tc.camera_dropout, (self.tc.seed, self.step, self.dist.rank)) \
            if self.model.training and self.tc.camera_dropout > 0 else None
        extra = {} if mask is None else {"camera_valid": mask}  # models without camera masks stay callable
        return self.model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=tasks, **extra)

    def train_mode(self) -> None:
        """``model.train()``, except the frozen modules, which stay in eval mode (BatchNorm statistics frozen)."""
        self.model.train()
        for name in self.frozen:  # frozen modules keep eval-mode BatchNorm statistics
            self.model.get_submodule(name).eval()

    # -- data ---------------------------------------------------------------------------------

    def _loader(self) -> Iterator[Batch]:
        total = self.tc.steps * self.tc.grad_accum
        sampler = SchedulerBatchSampler(self.scheduler, self.tc.batch_size, self.dist.rank, self.dist.world_size, total)
        # A private generator: creating the loader must not consume the global RNG (exact resume).
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + self.scheduler.micro_step)
        loader = DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate, num_workers=self.tc.num_workers,
                            generator=gen, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, prefetch_factor=2 if self.tc.num_workers else None,
                            worker_init_fn=workers_ignore_stop_signals)  # Ctrl-C: the trainer stops, not a worker
        return iter(loader)

    # -- one optimizer step --------------------------------------------------------------------

    def _micro_tasks(self, scheduled: str) -> list[str]:
        task = TaskScheduler.task_of(scheduled)
        if self.tc.scheduler.loss_tasks == "scheduled" and task != ALL:
            return [task]
        return self.train_tasks

    def task_losses(self, batch: Batch, tasks: list[str]) -> dict[str, Tensor]:
        """Each task's mean loss over the batch's labelled samples (``ClipTrainer`` runs clips here)."""
        with autocast(self.device, self.bf16):
            outputs = self.forward(batch, tasks)
        return {t: self.tasks[t].loss(outputs[t], batch)["loss"].float() for t in tasks}

    def train_step(self, batches: Iterator[Batch]) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches drawn from ``batches``; a non-finite loss or
        gradient on any rank skips it on every rank (BatchNorm buffers restored).

        Returns ``step``, ``lr``, ``grad_norm`` (NaN when skipped), ``loss`` (weighted total), ``skipped`` and
        per-task ``task_loss``/``task_n`` sums (float32 ``[T]``, ``train_tasks`` order). Raises
        ``NonFiniteTrainingError`` after ``train.max_consecutive_skips`` skipped steps in a row.
        """
        accum, world = self.tc.grad_accum, self.dist.world_size
        bad, unreduced = False, False  # unreduced: a no_sync() backward ran, no synchronised one after it
        nonfinite: set[str] = set()
        # A skipped step leaves no trace: BatchNorm statistics its forward passes moved are restored from this.
        buffers = [b.detach().clone() for b in self.model.buffers()]
        active: set[str] = set()
        task_loss = torch.zeros(len(self.train_tasks))
        task_n = torch.zeros(len(self.train_tasks))
        total = 0.0
        for i in range(accum):
            batch = next(batches).to(self.device)
            scheduled, _ = self.scheduler.next(self.tc.batch_size * world)
            candidates = self._micro_tasks(scheduled)
            local = torch.tensor([float(batch.present.get(self.tasks[t].label, torch.zeros(1, dtype=torch.bool)).sum())
                                  for t in candidates])
            counts = distributed.all_reduce_sum(local.to(self.device)).cpu()
            run = [t for t, c in zip(candidates, counts.tolist(), strict=True) if c > 0]
            if bad or not run:
                continue
            # Accumulation as DDP users know it (all-reduce in the last backward only); the losses are DDP's
            # forward, so its reducer learns which parameters this micro-step's sub-graph leaves unused.
            last = i == accum - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                means = self.ddp(self.task_losses, batch, run) if self.ddp is not None else self.task_losses(batch, run)
                losses = {}
                for t in run:
                    k = candidates.index(t)
                    # Weight = this rank's share of the task's labelled samples × W: the mean over ranks
                    # of weighted per-rank means is the global mean (balancing.py, point 4).
                    share = float(local[k]) * world / float(counts[k])
                    losses[t] = means[t] * share
                values = torch.stack([v.detach() for v in losses.values()])
                flags = torch.zeros(len(self.train_tasks), device=self.device)
                flags[[self.train_tasks.index(t) for t in losses]] = (~torch.isfinite(values)).float()
                flags = distributed.all_reduce_sum(flags).cpu()  # which tasks were non-finite on any rank
                if flags.any():
                    bad = True
                    nonfinite.update(t for t, f in zip(self.train_tasks, flags.tolist(), strict=True) if f > 0)
                    continue
                total += self.balancer.backward(losses, 1.0 / accum) / accum
            unreduced = not last
            for t, v in losses.items():
                j = self.train_tasks.index(t)
                task_loss[j] += float(v.detach())
                task_n[j] += 1
            active.update(run)

        if self.ddp is not None and unreduced:  # the last micro-step ran no backward (skipped or unlabelled)
            distributed.flush_ddp(self.ddp, self.trainable)
        grad_norm, lr, bad = self._apply_or_skip(bad, sorted(active), nonfinite, buffers)
        return {"step": self.step, "lr": lr, "grad_norm": grad_norm, "loss": total, "skipped": bad,
                "task_loss": task_loss, "task_n": task_n}

    def _apply_or_skip(self, bad: bool, active: list[str], nonfinite: set[str],
                       buffers: list[Tensor]) -> tuple[float, float, bool]:
        """End of an optimizer step: reduce, clip and apply the accumulated gradients, or (``bad``, or a
        non-finite gradient norm) skip the step, restoring the BatchNorm ``buffers`` saved before it.
        Returns ``(grad_norm, lr, skipped)``; raises ``NonFiniteTrainingError`` after
        ``train.max_consecutive_skips`` skipped steps in a row."""
        grad_norm = float("nan")
        if not bad:
            self.balancer.reduce(self.step, active)
            clip = self.tc.clip_grad_norm if self.tc.clip_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, clip))
            bad = not math.isfinite(grad_norm)  # identical on every rank: gradients are reduced
        lr = lr_at(self.step, self.tc)
        if bad:
            self.balancer.discard()
            self.skipped_steps += 1
            self.consecutive_skips += 1
            self.nonfinite_tasks.update(nonfinite)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        else:
            self.consecutive_skips = 0
            self.nonfinite_tasks = set()
            set_lr(self.optimizer, lr)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.balancer.zero_grad(set_to_none=True)
        distributed.broadcast_module(self.model, buffers_only=True)  # BatchNorm statistics stay in step, as DDP does
        self.step += 1
        if self.consecutive_skips >= self.tc.max_consecutive_skips:
            cause = (f"non-finite losses of tasks {sorted(self.nonfinite_tasks)}" if self.nonfinite_tasks
                     else "a non-finite gradient norm (every loss was finite)")
            raise NonFiniteTrainingError(
                f"step {self.step}: {self.consecutive_skips} consecutive steps skipped (train.max_consecutive_skips="
                f"{self.tc.max_consecutive_skips}) because of {cause}; the last good checkpoint is in {self.ckpt_dir}")
        return grad_norm, lr, bad

    # -- checkpoints ---------------------------------------------------------------------------

    @property
    def ckpt_dir(self) -> Path:
        """``<out_dir>/checkpoints``, where ``save`` writes ``step_XXXXXXXX`` and ``resume`` looks."""
        return self.out_dir / "checkpoints"

    def save(self) -> Path | None:
        """Checkpoint the run at ``step_XXXXXXXX`` (``training_state.save_training_state``); rank 0 writes."""
        return save_training_state(self)

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``path``, or from this run's newest *valid* checkpoint; False if the run has none
        (``training_state.resume_training_state``: a corrupt newest checkpoint is never a silent restart).
        Either way ``fit`` then continues the run's logs from the step it resumes at (0 without a checkpoint):
        what an earlier attempt logged after it is dropped, as that attempt's training after it was."""
        self.resuming = True
        return resume_training_state(self, path)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train from the current step to ``train.steps`` (or until ``train.time_limit_s``), logging every
        ``log_every``, evaluating every ``eval_every`` and checkpointing every ``ckpt_every`` steps and at the end.

        Returns the summary (steps, stopped_early, skipped_steps, last checkpoint, last log record, seconds),
        also written by rank 0 to ``<out_dir>/train_summary.json``. ``NonFiniteTrainingError`` propagates.
        A run resumed at ``train.steps`` is finished: nothing is written (a second final checkpoint would
        rotate the first one out) and the summary names the loaded checkpoint with ``already_finished``.
        """
        if self.resumed_from is not None and self.step >= self.tc.steps:
            return {"steps": self.step, "planned_steps": self.tc.steps, "stopped_early": False,
                    "skipped_steps": self.skipped_steps, "checkpoint": str(self.resumed_from),
                    "history": [], "seconds": 0.0, "already_finished": True}
        logger = TrainLogger(self.out_dir, self.train_tasks, self.tc.steps, enabled=self.dist.is_main,
                             progress=self.progress, resume_step=self.step if self.resuming else None)
        window: dict[str, Any] = defaultdict(float)
        t0, samples = time.perf_counter(), 0
        last_path: Path | None = None
        saved_step = -1
        with logger, ending_workers(self._loader()) as batches:
            logger.start(self.step)
            while self.step < self.tc.steps:
                self.train_mode()
                out = self.train_step(batches)
                samples += self.tc.batch_size * self.tc.grad_accum * self.dist.world_size
                window["loss"] += out["task_loss"]
                window["n"] += out["task_n"]
                if self.step % self.tc.log_every == 0 or self.step == self.tc.steps:
                    sums = distributed.all_reduce_sum(torch.cat([window["loss"], window["n"]]).to(self.device)).cpu()
                    k = len(self.train_tasks)
                    means = {t: float(sums[i] / sums[k + i]) for i, t in enumerate(self.train_tasks) if sums[k + i] > 0}
                    rate = samples / max(1e-9, time.perf_counter() - t0)
                    record = {"step": self.step, "lr": out["lr"], "grad_norm": out["grad_norm"], "loss": out["loss"],
                              "task_loss": means, "weights": self.balancer.weights(),
                              "skipped_steps": self.skipped_steps, "samples_per_s": rate}
                    muon_lr = next((g["lr"] for g in self.optimizer.param_groups if g.get("muon")), None)
                    if muon_lr is not None:  # Muon's kernels step at their own lr (train.muon_lr)
                        record["muon_lr"] = muon_lr
                    self.history.append(record)
                    logger.log(record)
                    window = defaultdict(float)
                logger.advance(self.step, out)
                if self.tc.eval_every and self.eval_set is not None and self.step % self.tc.eval_every == 0:
                    self.eval_history.append({"step": self.step, **self.evaluate(self.tc.eval_batches)})
                    logger.log_eval(self.step, self.eval_history[-1])
                if self.tc.ckpt_every and self.step % self.tc.ckpt_every == 0 and self.step < self.tc.steps:
                    last_path, saved_step = self.save(), self.step
                if stop_requested(self.device):  # Ctrl-C / SIGTERM (train/interrupt.py): save and leave
                    break
                if self._out_of_time(t0):
                    self.stopped_early = True
                    logger.console.print(f"[yellow]time limit {self.tc.time_limit_s:.0f}s reached: stopping at step "
                                         f"{self.step}/{self.tc.steps}")
                    break
            if saved_step != self.step:  # a stop right after a periodic save: that step is saved already
                last_path = self.save()
        summary = {"steps": self.step, "planned_steps": self.tc.steps, "stopped_early": self.stopped_early,
                   "skipped_steps": self.skipped_steps,
                   "checkpoint": str(last_path) if last_path is not None else None,  # None: a rank other than 0
                   "history": self.history[-1:] if self.history else [], "seconds": time.perf_counter() - t0}
        if self.dist.is_main:
            (self.out_dir / "train_summary.json").write_text(dumps(summary))
        return summary

    def _out_of_time(self, t0: float) -> bool:
        if self.tc.time_limit_s is None:
            return False
        late = float(self.dist.is_main and time.perf_counter() - t0 > self.tc.time_limit_s)
        # rank 0's clock decides
        return bool(distributed.all_reduce_sum(torch.tensor([late], device=self.device)).item() > 0)

    @torch.no_grad()
    def evaluate(self, max_batches: int | None = None) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` of the trained tasks on ``eval_set`` (at most ``max_batches`` batches of
        ``eval.batch_size``), by the one evaluation loop ``hydranet.eval.loop.evaluate``; under DDP each rank
        takes a slice and the metrics are synchronised. ``{}`` without an eval set."""
        if self.eval_set is None:
            return {}
        batches = dataset_batches(self.eval_set, self.cfg.eval.batch_size, max_batches, self.dist.rank,
                                  self.dist.world_size)
        return evaluate(self.forward, batches, {t: self.tasks[t] for t in self.train_tasks}, device=self.device,
                        sync=self.dist.enabled, model_module=self.model)
