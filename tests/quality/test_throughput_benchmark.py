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


def test_compare_spec_is_a_label_and_overrides():
    label, overrides = throughput.parse_compare("wide: model.trunk.stem_width=32 model.trunk.widths=[32,48,96,192]")
    assert label == "wide"
    assert overrides == ["model.trunk.stem_width=32", "model.trunk.widths=[32,48,96,192]"]


@pytest.mark.parametrize("spec", ["wide", "wide:", ": model.x=1", "two words: model.x=1", "wide: model.x"])
def test_a_bad_compare_spec_is_refused_naming_it(spec):
    with pytest.raises(ValueError, match="--compare"):
        throughput.parse_compare(spec)


@pytest.mark.parametrize("specs", [["a: train.lr=1e-3", "a: train.lr=2e-3"], ["config: train.lr=1e-3"]])
def test_compare_labels_must_be_distinct(specs, capsys):
    argv = [arg for spec in specs for arg in ("--compare", spec)]
    with pytest.raises(SystemExit) as exc:
        throughput.main(argv)
    assert exc.value.code == 2
    assert "--compare labels must differ" in capsys.readouterr().err


def test_a_bad_compare_override_fails_before_anything_is_timed(capsys, monkeypatch):
    monkeypatch.setattr(throughput, "matmul_peaks", lambda *a: pytest.fail("timed before the configs were checked"))
    with pytest.raises(SystemExit) as exc:
        throughput.main(["--compare", "x: model.trunk.nope=3"])
    assert exc.value.code == 2
    assert "model.trunk.nope=3" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["train.batch_size", "train.threads", "train.precision", "train.channels_last"])
def test_a_setting_every_compared_step_shares_is_refused(key):
    """Before: ``--compare "b8: train.batch_size=8"`` timed the step at the config's batch under the label b8."""
    with pytest.raises(ValueError, match=rf"{key} is the same for every compared step"):
        throughput.parse_compare(f"x: model.trunk.stem_width=32 {key}=8")


def test_a_bad_compare_override_names_the_compare_option(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--compare", "x: model.trunk.nope=3"])
    assert "--compare 'x: model.trunk.nope=3'" in capsys.readouterr().err


def test_a_preset_takes_the_model_overrides():
    """Before: ``--preset`` replaced the model section after ``--set`` (and a --compare variant's overrides) had
    been applied, so ``model.…`` overrides were dropped and the variant was timed as the bare preset."""
    cfg = throughput.step_config(SimpleNamespace(config=None, set=["model.tasks={drivable: {}}"], preset="tiny"))
    assert cfg.task_names() == ["drivable"] and tuple(cfg.resolved_model().setup.image_size) == (128, 256)
    assert len(throughput.step_config(SimpleNamespace(config=None, set=[], preset="tiny")).task_names()) == 7
