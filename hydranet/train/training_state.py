"""A training run's full state in a checkpoint, and back: what exact resume needs.

``save_training_state`` writes the weights plus everything the loop needs to continue as if it had
never stopped: step and skip counters, the task scheduler's position, optimizer and balancer tensors,
every rank's RNG state (gathered: all ranks take part), the config and the last eval.
``resume_training_state`` restores it into a freshly built ``Trainer`` (a ``TrainingRun``) of the same config; a
different number of ranks only reseeds dropout-style randomness (the data order lives in the scheduler state).
Checkpoint file I/O itself (safetensors + JSON, atomic, rotation) is ``hydranet.checkpoint``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from hydranet.checkpoint import (
    CheckpointError,
    b64_tensor,
    load_checkpoint,
    load_latest_valid,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from hydranet.train import distributed
from hydranet.train.balancing import Balancer
from hydranet.train.config import Config, TrainConfig, config_to_dict
from hydranet.train.scheduler import TaskScheduler


class TrainingRun(Protocol):
    """What a checkpoint of a run holds and resume restores: the parts of ``hydranet.train.trainer.Trainer`` this
    module reads and writes (the trainer is one)."""

    cfg: Config
    tc: TrainConfig
    dist: distributed.DistInfo
    device: torch.device
    model: nn.Module
    model_config: dict[str, Any]
    train_tasks: list[str]
    frozen: list[str]
    scheduler: TaskScheduler
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    param_names: list[str]
    step: int
    skipped_steps: int
    consecutive_skips: int
    nonfinite_tasks: set[str]
    eval_history: list[dict[str, Any]]
    resume_note: str | None
    resumed_from: Path | None

    @property
    def ckpt_dir(self) -> Path:
        """Where the run's ``step_XXXXXXXX`` checkpoints go."""


def save_training_state(trainer: TrainingRun) -> Path | None:
    """Write ``<out_dir>/checkpoints/step_XXXXXXXX`` (weights, optimizer + balancer tensors, the state
    dict below); rank 0 writes, every rank takes part in gathering the RNG states (exact resume).
    Returns the checkpoint path on rank 0, None elsewhere."""
    states = distributed.all_gather_tensor(torch.get_rng_state().to(trainer.device))
    rngs = [{**rng_state(), "torch": b64_tensor(s)} for s in states]
    path = None
    if trainer.dist.is_main:
        opt_tensors, opt_meta = optimizer_to_tensors(trainer.optimizer, trainer.param_names)
        opt_tensors |= {f"balancer.{k}": v for k, v in trainer.balancer.state_dict().items()}
        state = {
            "step": trainer.step, "skipped_steps": trainer.skipped_steps,
            "consecutive_skips": trainer.consecutive_skips, "nonfinite_tasks": sorted(trainer.nonfinite_tasks),
            "config": config_to_dict(trainer.cfg),
            "model_config": trainer.model_config, "train_tasks": trainer.train_tasks, "frozen": trainer.frozen,
            "scheduler": trainer.scheduler.state_dict(), "rng": rngs, "world_size": trainer.dist.world_size,
            "optimizer": opt_meta, "balancing": trainer.tc.balancing.kind,
            "balancer_weights": trainer.balancer.weights(), "eval": trainer.eval_history[-1:] or None,
        }
        path = save_checkpoint(trainer.ckpt_dir / f"step_{trainer.step:08d}", trainer.model, state, opt_tensors,
                               keep=trainer.tc.keep_checkpoints)
    distributed.barrier()
    return path


def resume_training_state(trainer: TrainingRun, path: str | Path | None = None) -> bool:
    """Load ``path``, or this run's newest *valid* checkpoint, into ``trainer``; False if the run has none.

    A corrupt newest checkpoint is never a silent restart: the newest valid one is used and
    ``resume_note`` says so in one line, or ``CheckpointError`` names every file when none loads."""
    if path is not None:
        ckpt = load_checkpoint(path, map_location=trainer.device)
    else:
        found, trainer.resume_note = load_latest_valid(trainer.ckpt_dir, map_location=trainer.device,
                                                       quarantine=trainer.dist.is_main)
        if found is None:
            return False
        ckpt = found
    where = ckpt.path
    try:
        trainer.model.load_state_dict(ckpt.model, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not match this model ({e})") from None
    bal = {k[len("balancer."):]: v for k, v in ckpt.optimizer.items() if k.startswith("balancer.")}
    trainer.balancer.load_state_dict(bal, strict=True)
    opt = {k: v for k, v in ckpt.optimizer.items() if not k.startswith("balancer.")}
    optimizer_from_tensors(trainer.optimizer, opt, ckpt.state["optimizer"], trainer.param_names, str(where))
    trainer.scheduler.load_state_dict(ckpt.state["scheduler"])
    trainer.step = int(ckpt.state["step"])
    trainer.skipped_steps = int(ckpt.state["skipped_steps"])
    trainer.consecutive_skips = int(ckpt.state.get("consecutive_skips", 0))
    trainer.nonfinite_tasks = set(ckpt.state.get("nonfinite_tasks", []))
    trainer.resumed_from = Path(where)
    rngs = ckpt.state["rng"]
    if len(rngs) == trainer.dist.world_size:
        set_rng_state(rngs[trainer.dist.rank])
    else:  # a different number of ranks: data order is unaffected, only dropout-style randomness
        torch.manual_seed(trainer.tc.seed + 7919 * trainer.dist.rank + trainer.step)
        per_rank = trainer.tc.batch_size * trainer.tc.grad_accum
        was, now = int(ckpt.state.get("world_size", len(rngs))), trainer.dist.world_size
        note = (f"the run trained on {was} rank(s) and resumes on {now}: its global batch goes from {per_rank * was} "
                f"to {per_rank * now} samples per step (train.batch_size x train.grad_accum x ranks); resume with "
                f"{was} rank(s) to keep it")
        trainer.resume_note = f"{trainer.resume_note}; {note}" if trainer.resume_note else note
    return True
