"""Every model preset trains and exports: the real trainer runs each preset with all seven tasks on world frames
(at a small input size), the weights move, and the exported graph's outputs equal eager PyTorch's."""

import pytest
import torch

from hydranet.checkpoint import load_model
from hydranet.deploy import DeployedModel, export_checkpoint, parity
from hydranet.deploy.verify import PARITY_TOLERANCE
from hydranet.model import MODEL_PRESETS
from hydranet.model.config import ALL_TASKS
from hydranet.train.config import config_from_dict
from hydranet.train.run import run_training


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_every_preset_trains_and_exports_with_parity(preset, tmp_path):
    cfg = config_from_dict({
        "data": {"datasets": {"world": {"kind": "world", "frames": 2, "world": {"seed": 3, "num_scenes": 1,
                                                                                 "frames_per_scene": 2}}}},
        "model": {"preset": preset, "setup": {"image_size": [64, 128],
                                              "grid": {"x_range": [-16, 16], "y_range": [-16, 16], "cell": 1.0}},
                  "tasks": {t: {} for t in ALL_TASKS}},
        "train": {"steps": 2, "batch_size": 1, "warmup_steps": 0, "threads": 1, "log_every": 1, "ckpt_every": 1}})
    torch.manual_seed(0)
    summary = run_training(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    first, _ = load_model(tmp_path / "run" / "checkpoints" / "step_00000001")
    trained, _ = load_model(summary["checkpoint"])
    before = first.state_dict()
    moved = [n for n, p in trained.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("trunk.") for n in moved)  # the second step moved the shared trunk, not only a head
    assert all(torch.isfinite(p).all() for p in trained.parameters())
    manifest, model = export_checkpoint(summary["checkpoint"], tmp_path / "model.onnx")
    assert set(manifest.tasks) == set(ALL_TASKS)
    worst = parity(model, DeployedModel(tmp_path / "model.onnx", manifest, threads=1), frames=1)
    assert max(worst.values()) <= PARITY_TOLERANCE, worst
