"""RegNet trunk presets and the FPN neck: shapes, strides, the design-space generator."""

import pytest
import torch

from hydranet.model.registry import create_trunk
from hydranet.model.trunk import FPN, TRUNK_PRESETS, RegNet, RegNetSpec, regnet_widths
from hydranet.train import ConfigError, default_demo_config, load_config


@pytest.mark.parametrize(("params", "widths", "depths"), [
    # Published stage widths/depths (Radosavovic et al. 2020; identical in torchvision/timm).
    ((24, 36.44, 2.49, 13, 8), [24, 56, 152, 368], [1, 1, 4, 7]),  # RegNetX-200MF
    ((24, 24.48, 2.54, 22, 16), [32, 64, 160, 400], [1, 2, 7, 12]),  # RegNetX-400MF
    ((48, 27.89, 2.09, 16, 8), [48, 104, 208, 440], [1, 3, 6, 6]),  # RegNetY-400MF
    ((56, 38.84, 2.4, 14, 16), [64, 144, 320, 784], [1, 3, 8, 2]),  # RegNetY-800MF
])
def test_design_space_reproduces_published_regnets(params, widths, depths):
    w, d, _ = regnet_widths(*params)
    assert (w, d) == (widths, depths)


@pytest.mark.parametrize("name", sorted(TRUNK_PRESETS))
def test_presets_give_four_stages_at_strides_4_to_32(name):
    torch.manual_seed(0)
    trunk = create_trunk(name).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = trunk(x)
    assert trunk.strides == [4, 8, 16, 32]
    assert [f.shape[1] for f in feats] == trunk.out_channels == list(TRUNK_PRESETS[name].widths)
    assert [tuple(f.shape[-2:]) for f in feats] == [(64 // s, 96 // s) for s in trunk.strides]
    assert all(torch.isfinite(f).all() for f in feats)


def test_group_conv_and_squeeze_excite_are_built_as_configured():
    trunk = create_trunk("regnet_tiny", widths=[16, 32, 64, 128], group_width=16, se_ratio=0.0)
    grouped = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped and all(m.in_channels // m.groups == 16 for m in grouped)
    assert not any(type(m).__name__ == "SqueezeExcite" for m in trunk.modules())
    y = create_trunk("regnet_tiny")  # RegNetY-style preset has SE
    assert any(type(m).__name__ == "SqueezeExcite" for m in y.modules())


def test_bad_trunk_configs_raise_clear_errors():
    with pytest.raises(KeyError, match="unknown trunk 'nope'"):
        create_trunk("nope")
    with pytest.raises(ValueError, match="not a multiple of group width"):
        RegNet(RegNetSpec((12, 32, 64, 128), (1, 1, 1, 1), group_width=8))
    with pytest.raises(ValueError, match="4 stage widths"):
        RegNetSpec((16, 32, 64), (1, 1, 1))


def test_preset_edits_that_do_not_fit_the_preset_fail_when_the_config_loads():
    # group_width 16 on regnet_small's 24-wide first stage: refused while the config is read, naming the field
    # path and the preset's widths, not when the model is built deep inside a run.
    with pytest.raises(ConfigError, match=r"model\.trunk.*regnet_small.*width 24 is not a multiple of group width 16"
                       r".*widths \[24, 48, 96, 192\]"):
        load_config(default_demo_config(), ["model.trunk.group_width=16"])
    cfg = load_config(default_demo_config(), ["model.trunk.group_width=16", "model.trunk.widths=[32,48,96,192]"])
    assert cfg.resolved_model().trunk.options()["group_width"] == 16


@pytest.mark.parametrize("min_level", [2, 3])
def test_fpn_levels_shapes_and_channels(min_level):
    trunk = create_trunk("regnet_tiny")
    fpn = FPN(trunk.out_channels, trunk.strides, channels=24, min_level=min_level)
    feats = trunk(torch.randn(1, 3, 64, 128))
    out = fpn(feats)
    names = [f"p{lvl}" for lvl in range(min_level, 6)]
    assert list(out) == names == list(fpn.strides)
    for name in names:
        s = fpn.strides[name]
        assert out[name].shape == (1, 24, 64 // s, 128 // s)


def test_fpn_top_down_path_carries_coarse_context_to_fine_levels():
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32, 64], [4, 8, 16, 32], channels=8).eval()
    feats = [torch.randn(1, c, 32 // s * 4, 32 // s * 4) for c, s in zip([8, 16, 32, 64], [1, 2, 4, 8], strict=True)]
    changed = [f.clone() for f in feats]
    changed[3] += 1.0  # only the stride-32 input changes
    with torch.no_grad():
        a, b = fpn(feats), fpn(changed)
    assert not torch.allclose(a["p2"], b["p2"])  # reached the finest level through the top-down path


def test_fpn_rejects_missing_strides():
    with pytest.raises(ValueError, match="need trunk strides"):
        FPN([16, 32, 64], [8, 16, 32], min_level=2)


@pytest.mark.parametrize("size", [(4, 4), (16, 32), (31, 64)])
def test_one_minimum_input_size_the_neck_s_coarsest_stride(size):
    """The network's smallest input is the stride of the neck's coarsest level (p5: 32), stated once
    (``min_image_side``). Before, a side under 8 was told "at least 8" (the Setup's check of any image, which ran
    first) and one of 8..31 "at least 32": two minimums for the one field."""
    from pydantic import ValidationError

    from hydranet.model import ModelConfig
    from hydranet.model.trunk import FPN_MAX_LEVEL, min_image_side

    trunk = create_trunk("regnet_tiny").eval()
    neck = FPN(trunk.out_channels, trunk.strides, 16).eval()
    assert min_image_side() == max(neck.strides.values()) == max(trunk.strides) == 2 ** FPN_MAX_LEVEL == 32
    with pytest.raises(ValidationError) as e:
        ModelConfig.preset("tiny", setup={"image_size": size})
    assert [err["loc"] for err in e.value.errors()] == [("setup", "image_size")]
    assert e.value.errors()[0]["msg"] == (f"{size} is too small for the network: H and W must be at least 32 pixels, "
                                          "the stride of its coarsest feature level (p5)")
    with pytest.raises(ConfigError, match=r"^--set model.setup.image_size=\[.*\]: model.setup.image_size: \("):
        load_config("configs/demo.yaml", [f"model.setup.image_size=[{size[0]}, {size[1]}]"])
    # at the minimum the neck's coarsest level is one cell
    x = torch.zeros(1, 3, min_image_side(), min_image_side())
    with torch.no_grad():
        assert neck(trunk(x))[f"p{FPN_MAX_LEVEL}"].shape[-2:] == (1, 1)
