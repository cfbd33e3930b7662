"""A tiny model, two tiny tasks and a tiny partially-labelled dataset for the training tests.

Also a command-line entry (used by the kill -9 and torchrun tests)::

    python tests/train/train_testkit.py OUT_DIR [--steps N] [--batch B] [--balancing K] [--resume]
        [--ckpt-every N] [--sleep S]

Tasks: ``tiny_depth`` (label ``depth``, masked MSE) and ``tiny_drivable`` (label ``drivable``, BCE).
Both losses are means over the *samples* that carry the label, like the real tasks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydranet.data.sample import Batch, Sample
from hydranet.metrics import Metric
from hydranet.tasks.base import TASKS, Task, register_task
from hydranet.train.config import Config, config_from_dict

H = W = 8
N_CAM = 2


class TinyDataset(torch.utils.data.Dataset):
    """Deterministic by (seed, i). ``depth`` on 3 of 4 samples, ``drivable`` on every other one."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def has(self, label: str, i: int) -> bool:
        return i % 4 != 3 if label == "depth" else i % 2 == 0

    def label_presence(self, labels: list[str]) -> dict[str, np.ndarray]:
        return {k: np.array([self.has(k, i) for i in range(self.n)]) for k in labels}

    def __getitem__(self, i: int) -> Sample:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        images = torch.randint(0, 256, (N_CAM, 3, H, W), generator=g, dtype=torch.uint8)
        bright = images.float().mean(1) / 255.0
        labels: dict[str, Any] = {}
        if self.has("depth", i):
            labels["depth"] = (1.0 + 4.0 * bright).float()
        if self.has("drivable", i):
            labels["drivable"] = (bright > 0.5).to(torch.uint8)
        return Sample(images=images, intrinsics=torch.eye(3).repeat(N_CAM, 1, 1),
                      T_ego_from_cam=torch.eye(4).repeat(N_CAM, 1, 1), T_world_from_ego=torch.eye(4),
                      timestamp=0.1 * i, scene_id=f"tiny{i // 8}", camera_names=("a", "b"), frame_index=i % 8,
                      labels=labels)


class TinyModel(nn.Module):
    """trunk -> neck -> one 1×1 head per task; GroupNorm (no batch statistics) for exact DDP equality."""

    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.task_objects = tasks
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU())
        self.neck = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fusion = None
        self.heads = nn.ModuleDict({t: nn.Conv2d(8, 1, 1) for t in tasks})

    def forward(self, images: Tensor, intrinsics: Tensor, T: Tensor, tasks: list[str] | None = None) -> dict:
        b, n = images.shape[:2]
        x = images.flatten(0, 1).float() / 255.0
        f = self.neck(self.trunk(x))
        return {t: {"pred": self.heads[t](f).reshape(b, n, H, W)} for t in (tasks or self.heads.keys())}


class MeanMetric(Metric):
    def __init__(self) -> None:
        self.reset()

    def update(self, preds: list[Any], targets: list[Any]) -> None:
        for p, t in zip(preds, targets, strict=True):
            if t is not None:
                self.err += float((p - t.float()).abs().mean())
                self.n += 1

    def compute(self) -> dict[str, float]:
        return {"mae": self.err / max(1, self.n), "n": float(self.n)}

    def reset(self) -> None:
        self.err, self.n = 0.0, 0


class _TinyTask(Task):
    space = "camera"

    def build_head(self, ctx: Any) -> nn.Module:
        return nn.Conv2d(8, 1, 1)

    def _present(self, batch: Batch) -> Tensor:
        return batch.present.get(self.label, torch.zeros(len(batch), dtype=torch.bool))

    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Any]:
        return list(outputs["pred"].detach())

    def make_metric(self) -> Metric:
        return MeanMetric()

    def draw(self, views: Any, decoded: Any, ground_truth: bool = False) -> None:
        pass


def _tiny_tasks() -> dict[str, Task]:
    if "tiny_depth" not in TASKS:

        @register_task
        class TinyDepth(_TinyTask):
            name, label = "tiny_depth", "depth"

            def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
                m = self._present(batch)
                if not m.any():
                    return {"loss": self.zero_loss(outputs)}
                err = (outputs["pred"][m] - batch.labels["depth"][m]) ** 2
                return {"loss": err.mean((1, 2, 3)).mean()}

        @register_task
        class TinyDrivable(_TinyTask):
            name, label = "tiny_drivable", "drivable"

            def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
                m = self._present(batch)
                if not m.any():
                    return {"loss": self.zero_loss(outputs)}
                bce = F.binary_cross_entropy_with_logits(outputs["pred"][m], batch.labels["drivable"][m].float(),
                                                         reduction="none")
                return {"loss": bce.mean((1, 2, 3)).mean()}

    return {"tiny_depth": TASKS["tiny_depth"](), "tiny_drivable": TASKS["tiny_drivable"]()}


def tiny_config(**train: Any) -> Config:
    _tiny_tasks()  # registered before the config names them (unknown tasks are config errors)
    tree = {"data": {"datasets": {"tiny": {"kind": "world", "frames": 64}}},
            "model": {"tasks": {"tiny_depth": {}, "tiny_drivable": {}}},
            "train": {"steps": 6, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "log_every": 2,
                      "precision": "fp32", **train}}
    return config_from_dict(tree, "<tiny>")


def make_trainer(out: str | Path, seed: int = 0, dist_info: Any = None, **train: Any) -> Any:
    from hydranet.train.trainer import Trainer

    cfg = tiny_config(seed=seed, **train)
    torch.manual_seed(seed)
    tasks = _tiny_tasks()
    model = TinyModel(tasks)
    return Trainer(cfg, model, TinyDataset(), out, tasks=tasks, eval_set=TinyDataset(16, seed=1),
                   dist_info=dist_info, progress=False)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--balancing", default="static")
    p.add_argument("--scheduler", default="all")
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stoppable", action="store_true", help="fit as run_training does: a signal stops and saves")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from hydranet.train import distributed

    info = distributed.init_distributed(torch.device("cpu"), timeout_s=60)
    kinds = a.balancing.split(",")
    for kind in kinds:  # several strategies in one launch (each in OUT/<kind> when more than one)
        out = Path(a.out) / kind if len(kinds) > 1 else Path(a.out)
        trainer = make_trainer(out, dist_info=info, steps=a.steps, batch_size=a.batch, grad_accum=a.accum,
                               ckpt_every=a.ckpt_every, balancing={"kind": kind, "shared": ["trunk", "neck"],
                                                                   "gradnorm": {"shared": "neck"}},
                               scheduler={"kind": a.scheduler}, keep_checkpoints=100)
        if a.resume:
            trainer.resume()
        if a.sleep:  # slow each step down so a test can kill the process mid-run
            step = trainer.train_step

            def slow(batches: Any, step: Any = step) -> Any:
                time.sleep(a.sleep)
                return step(batches)

            trainer.train_step = slow
        if a.stoppable:
            from hydranet.train.interrupt import stop_on_signals

            with stop_on_signals():
                trainer.fit()
        else:
            trainer.fit()
    distributed.shutdown()
    print("done", os.getpid())
    if info.enabled:
        distributed.exit_process(0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1:])
