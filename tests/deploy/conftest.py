"""A tiny HydraNet checkpoint (all seven tasks, 64×128 images, 32×32 BEV) and its exported graph, shared by
the deploy tests. Detection decoders keep every peak (score_threshold 0) so decode comparisons have objects."""

from pathlib import Path

import pytest
import torch
from deploy_testkit import tiny_config

from hydranet.checkpoint import save_checkpoint
from hydranet.model import create_model


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = create_model(cfg)
    # Non-trivial BatchNorm statistics, so a graph that dropped or mis-folded them would not match eager.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    directory = tmp_path_factory.mktemp("ckpt") / "run" / "step_00000000"
    save_checkpoint(directory, model, {"model_config": cfg.model_dump(mode="json"), "config": {}, "step": 0})
    return directory


@pytest.fixture(scope="session")
def model(checkpoint):
    from hydranet.checkpoint import load_model

    return load_model(checkpoint)[0]


@pytest.fixture(scope="session")
def exported(checkpoint, tmp_path_factory) -> Path:
    """All tasks, batch 1, from the checkpoint."""
    from hydranet.deploy import export_checkpoint

    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_checkpoint(checkpoint, path)
    return path
