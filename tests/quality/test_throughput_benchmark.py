"""benchmarks/throughput.py counts the network's FLOPs apart from the optimizer's own products."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hydranet.train.optim import MuonAdamW

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hydranet_throughput_benchmark", ROOT / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)


@pytest.mark.parametrize("muon", [True, False])
def test_optimizer_flops_are_counted_apart_from_forward_and_backward(muon):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32, bias=False)
    groups = [{"params": [layer.weight], "weight_decay": 0.0, **({"muon": True} if muon else {})}]
    optimizer = MuonAdamW(groups, lr=1e-3, betas=(0.9, 0.999)) if muon else torch.optim.AdamW(groups, lr=1e-3)
    x = torch.randn(16, 64)

    def step() -> None:
        layer(x).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    total, of_optimizer = throughput.counted_flops(SimpleNamespace(optimizer=optimizer), step)
    forward_backward = 2 * 2 * 16 * 64 * 32  # the forward product and the weight gradient (x needs none)
    assert total - of_optimizer == forward_backward
    if muon:  # five Newton–Schulz iterations on the [32, 64] update (padded to [32, 128]): three products each
        assert of_optimizer == 5 * (2 * 32 * 32 * 128 + 2 * 32 * 32 * 32 + 2 * 32 * 32 * 128)
    else:
        assert of_optimizer == 0
    assert "step" not in vars(optimizer)  # the optimizer's own step method again
