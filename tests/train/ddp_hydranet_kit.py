"""The real HydraNet (tiny preset, 2 cameras at 32x64, drivable + depth heads, BatchNorm everywhere)
trained a couple of steps, for the "N ranks at batch B/N == 1 process at batch B" test::

    python tests/train/ddp_hydranet_kit.py OUT --batch B        # or under torchrun --nproc-per-node 2

Trains twice, into OUT/sync (``train.sync_batchnorm: true``) and OUT/plain (per-rank BatchNorm). Rank 0
also writes the reduced gradients of the first step (what DDP equality is about) to ``grads.safetensors``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from hydranet.data.sample import Sample
from hydranet.train.config import config_from_dict

H, W, N_CAM = 32, 64, 2
RIG = [{"name": name, "hfov_deg": 90, "position": [0, 0, 1.5], "yaw_deg": 180 * i}
       for i, name in enumerate(("front", "back"))]
MODEL = {"preset": "tiny", "tasks": {"drivable": {}, "depth": {}},
         "setup": {"image_size": [H, W], "grid": {"x_range": [-8, 8], "y_range": [-8, 8], "cell": 1.0},
                   "rigs": {"two": RIG}}}


class Frames(torch.utils.data.Dataset):
    """Deterministic random frames with drivable and depth labels derived from the pixels."""

    def __len__(self) -> int:
        return 32

    def label_presence(self, labels: list[str]) -> dict:
        return {k: [True] * len(self) for k in labels}

    def __getitem__(self, i: int) -> Sample:
        g = torch.Generator().manual_seed(1000 + i)
        images = torch.randint(0, 256, (N_CAM, 3, H, W), generator=g, dtype=torch.uint8)
        bright = images.float().mean(1) / 255.0
        return Sample(images=images, intrinsics=torch.tensor([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]).repeat(
                          N_CAM, 1, 1),
                      T_ego_from_cam=torch.eye(4).repeat(N_CAM, 1, 1), T_world_from_ego=torch.eye(4), timestamp=0.1 * i,
                      scene_id=f"s{i // 4}", camera_names=("front", "back"), frame_index=i % 4,
                      labels={"drivable": (bright > 0.5).to(torch.uint8), "depth": 1.0 + 9.0 * bright})


def main(out: Path, batch: int) -> None:
    from hydranet.model import create_model
    from hydranet.train import distributed
    from hydranet.train.trainer import Trainer

    torch.set_num_threads(1)
    info = distributed.init_distributed(torch.device("cpu"), timeout_s=60)
    for sync in (True, False):
        cfg = config_from_dict({"data": {"datasets": {"x": {"kind": "world", "frames": 1}}}, "model": MODEL,
                                "train": {"steps": 2, "batch_size": batch, "lr": 1e-2, "warmup_steps": 0,
                                          "precision": "fp32", "sync_batchnorm": sync, "log_every": 1}})
        torch.manual_seed(0)
        model = create_model(cfg.resolved_model())
        run = out / ("sync" if sync else "plain")
        trainer = Trainer(cfg, model, Frames(), run, dist_info=info, progress=False)
        step, grads = trainer.optimizer.step, {}

        def record(*a, step=step, grads=grads, trainer=trainer, **k):  # reduced gradients, before AdamW
            if not grads:
                grads.update({n: p.grad.detach().contiguous().clone() for n, p in trainer.model.named_parameters()
                              if p.grad is not None})
            return step(*a, **k)

        trainer.optimizer.step = record
        trainer.fit()
        if info.is_main:
            save_file(grads, run / "grads.safetensors")
    distributed.shutdown()
    if info.enabled:
        distributed.exit_process(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[sys.argv.index("--batch") + 1]))
