"""The optimizer: AdamW, or Muon for the hidden layers' kernels and AdamW for the rest (``train.optimizer``);
the learning-rate schedule."""

from __future__ import annotations

import json

import pytest
import torch
from train_testkit import make_trainer

from hydranet.model import ModelConfig, create_model
from hydranet.train.config import TrainConfig
from hydranet.train.optim import MuonAdamW, build_optimizer, lr_at, muon_exempt, set_lr


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": [32, 64]},
                             tasks={"detection2d": {}, "objects3d": {}, "depth": {}})
    return create_model(cfg).to(memory_format=torch.channels_last)


def test_muon_leaves_the_pixels_first_conv_and_the_heads_outputs_to_adamw(model):
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = sorted(names[i] for i in muon_exempt(model))
    assert exempt[-1] == "trunk.stem.0.weight"
    outputs = [n for n in exempt if n != "trunk.stem.0.weight"]
    assert outputs and all(".branches." in n for n in outputs)
    # every head output (2D: heatmap, offset, size; 3D: seven; depth: one) and nothing else of the heads
    assert len(outputs) == sum(len(h.head.output_convs()) for h in model.heads.values())


def test_muon_steps_equal_torch_muon_for_kernels_and_adamw_for_the_rest(model):
    """Two steps of ``MuonAdamW`` on the channels-last model against ``torch.optim.Muon`` on each hidden kernel
    flattened to ``[out, in·kh·kw]`` (one matrix at a time, where ``MuonAdamW`` orthogonalises them in padded
    batches) and ``torch.optim.AdamW`` (fused) on every other parameter."""
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon, the reference, is in torch >= 2.9")
    cfg = TrainConfig(optimizer="muon", lr=6e-3, weight_decay=0.01)
    named = [(n, p) for n, p in model.named_parameters()]
    start = {n: p.detach().clone() for n, p in named}
    torch.manual_seed(1)
    grads = {n: torch.randn_like(p) for n, p in named}
    opt = build_optimizer(named, cfg, exempt=muon_exempt(model))
    assert isinstance(opt, MuonAdamW)
    hidden = {id(p) for g in opt.param_groups if g.get("muon") for p in g["params"]}
    for _ in range(2):
        for n, p in named:
            p.grad = grads[n].clone()
        opt.step()
    checked_layouts = set()
    for n, p in named:
        if id(p) in hidden:
            ref = torch.nn.Parameter(start[n].contiguous().view(p.shape[0], -1).clone())
            ref_opt = torch.optim.Muon([ref], lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
            for _ in range(2):
                ref.grad = grads[n].contiguous().view(p.shape[0], -1).clone()
                ref_opt.step()
            # bf16 Newton-Schulz products sum the columns in another order for a channels-last kernel
            torch.testing.assert_close(p.detach().contiguous().view(p.shape[0], -1), ref.detach(), rtol=0, atol=1e-4)
            assert (ref.detach() - start[n].contiguous().view(p.shape[0], -1)).abs().max() > 1e-3  # it moved
            checked_layouts.add(p.is_contiguous())
        else:
            ref = torch.nn.Parameter(start[n].clone())
            decay = cfg.weight_decay if p.ndim >= 2 else 0.0
            ref_opt = torch.optim.AdamW([ref], lr=cfg.lr, betas=cfg.betas, weight_decay=decay, fused=True)
            for _ in range(2):
                ref.grad = grads[n].clone()
                ref_opt.step()
            torch.testing.assert_close(p.detach(), ref.detach(), rtol=0, atol=1e-7)
    assert checked_layouts == {True, False}  # channels-last 3x3 kernels and 1x1 kernels both checked


def test_muon_lr_scales_muons_steps_on_the_schedule_and_leaves_adamws(model):
    """``train.muon_lr``: Muon's groups follow the warmup-cosine schedule at muon_lr / lr times AdamW's lr, and
    their first step moves each kernel that many times as far as at ``lr``; AdamW's parameters move as before."""
    named = [(n, p) for n, p in model.named_parameters()]
    start = {n: p.detach().clone() for n, p in named}
    torch.manual_seed(2)
    grads = {n: torch.randn_like(p) for n, p in named}
    moved = {}
    for muon_lr in (None, 1.5e-2):
        cfg = TrainConfig(optimizer="muon", lr=6e-3, muon_lr=muon_lr, weight_decay=0.0, steps=100, warmup_steps=10)
        with torch.no_grad():
            for n, p in named:
                p.copy_(start[n])
        opt = build_optimizer(named, cfg, exempt=muon_exempt(model))
        set_lr(opt, lr_at(3, cfg))
        assert {g.get("muon", False): g["lr"] for g in opt.param_groups} == pytest.approx(
            {False: lr_at(3, cfg), True: lr_at(3, cfg) * (muon_lr or cfg.lr) / cfg.lr})
        for n, p in named:
            p.grad = grads[n].clone()
        opt.step()
        hidden = {id(p) for g in opt.param_groups if g.get("muon") for p in g["params"]}
        moved[muon_lr] = {n: (p.detach() - start[n], id(p) in hidden) for n, p in named}
    with torch.no_grad():
        for n, p in named:
            p.copy_(start[n])
    for n, (delta, is_hidden) in moved[1.5e-2].items():
        torch.testing.assert_close(delta, moved[None][n][0] * (2.5 if is_hidden else 1.0), rtol=1e-4, atol=1e-6)


def test_adamw_ignores_muon_lr_so_a_muon_config_switches_as_it_is():
    cfg = TrainConfig(lr=6e-3, muon_lr=1e-2, optimizer="adamw")
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = build_optimizer([("w", p)], cfg)
    assert type(opt) is torch.optim.AdamW
    set_lr(opt, 6e-3)
    assert all(g["lr"] == 6e-3 for g in opt.param_groups)


def test_adamw_is_the_default_and_the_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-2, steps=100, warmup_steps=10, min_lr_ratio=0.1)
    p = torch.nn.Parameter(torch.zeros(3, 3))
    assert type(build_optimizer([("w", p)], cfg)) is torch.optim.AdamW
    assert lr_at(0, cfg) == pytest.approx(1e-3) and lr_at(9, cfg) == pytest.approx(1e-2)
    assert lr_at(10, cfg) == pytest.approx(1e-2) and lr_at(100, cfg) == pytest.approx(1e-3)


def test_a_muon_run_resumes_exactly(tmp_path):
    """Muon's momentum buffers go through the checkpoint like AdamW's moments: a run stopped at step 3 and
    resumed ends where the uninterrupted run does."""
    full = make_trainer(tmp_path / "full", steps=6, optimizer="muon")
    full.fit()
    part = make_trainer(tmp_path / "part", steps=3, optimizer="muon")
    part.fit()
    resumed = make_trainer(tmp_path / "part", steps=6, optimizer="muon")
    assert resumed.resume() and resumed.step == 3
    assert any("momentum_buffer" in s for s in resumed.optimizer.state.values())
    resumed.fit()
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_resuming_with_another_optimizer_is_refused_by_name(tmp_path):
    from hydranet.checkpoint import CheckpointError

    make_trainer(tmp_path, steps=2, optimizer="muon").fit()
    with pytest.raises(CheckpointError, match=r"resume with the train.optimizer the run began with \(muon\)"):
        make_trainer(tmp_path, steps=4, optimizer="adamw").resume()


def test_the_log_shows_muons_own_lr(tmp_path):
    trainer = make_trainer(tmp_path, steps=4, optimizer="muon", lr=1e-3, muon_lr=4e-3, log_every=2)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    logged = [r for r in records if "lr" in r]
    assert logged and all(r["muon_lr"] == pytest.approx(4 * r["lr"]) for r in logged)
