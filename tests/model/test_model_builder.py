"""Injected parts: a builder turns a config into parts, HydraNet composes; a non-RegNet trunk is one file."""

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from hydranet.model import HydraNet, ModelConfig, build_parts, create_model
from hydranet.model.registry import TRUNKS, TrunkOptions, create_trunk, register_trunk

GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 2.0}


class PlainConvOptions(TrunkOptions):
    width: int = 8


class PlainConvTrunk(nn.Module):
    """Four stride-2 stages after a stride-2 stem: maps at strides 4, 8, 16, 32 (the trunk interface)."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        chans = [width, width * 2, width * 4, width * 8]
        self.stages = nn.ModuleList(nn.Conv2d(cin, cout, 3, stride=2, padding=1)
                                    for cin, cout in zip([width, *chans[:-1]], chans, strict=True))
        self.out_channels = chans
        self.strides = [4, 8, 16, 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = torch.relu(self.stem(x))
        out = []
        for stage in self.stages:
            x = torch.relu(stage(x))
            out.append(x)
        return out


@register_trunk("plain_conv_test", PlainConvOptions)
def plain_conv(options: PlainConvOptions) -> nn.Module:
    return PlainConvTrunk(options.width)


def config(**trunk) -> ModelConfig:
    return ModelConfig.preset("tiny", setup={"image_size": (32, 64), "grid": GRID},
                              tasks={"drivable": {}, "bev_semantic": {}},
                              trunk=trunk)


def test_a_registered_non_regnet_trunk_builds_a_working_hydranet():
    cfg = config(name="plain_conv_test", width=4)
    model = create_model(cfg)
    assert isinstance(model.trunk, PlainConvTrunk) and model.trunk.out_channels == [4, 8, 16, 32]
    images = torch.randint(0, 256, (1, 8, 3, 32, 64), dtype=torch.uint8)
    K = torch.eye(3).expand(1, 8, 3, 3).clone()
    K[..., 0, 0] = K[..., 1, 1] = 30.0
    K[..., 0, 2], K[..., 1, 2] = 32.0, 16.0
    T = torch.eye(4).expand(1, 8, 4, 4).clone()
    out = model(images, K, T)
    assert out["drivable"]["logits"].shape[:2] == (1, 8) and out["bev_semantic"]["logits"].shape[0] == 1
    assert ModelConfig.model_validate(cfg.model_dump()).trunk.options() == {"width": 4}  # round-trips


def test_trunk_options_are_checked_by_the_trunk_and_name_the_field():
    with pytest.raises(ValueError, match=r"trunk.widht: unknown field"):
        config(name="plain_conv_test", widht=4)
    with pytest.raises(ValueError, match=r"trunk.widths: .*at least 4"):
        config(name="regnet_tiny", widths=[8, 16])
    with pytest.raises(ValueError, match=r"unknown trunk 'nope'; registered trunks: \[.*plain_conv_test"):
        config(name="nope")


def test_pretrained_weights_come_from_a_local_file_only(tmp_path):
    torch.manual_seed(1)
    source = create_trunk("plain_conv_test", width=4)
    save_file(source.state_dict(), str(tmp_path / "trunk.safetensors"))
    torch.manual_seed(2)
    model = create_model(config(name="plain_conv_test", width=4, pretrained=str(tmp_path / "trunk.safetensors")))
    for k, v in source.state_dict().items():
        assert torch.equal(model.trunk.state_dict()[k], v)
    with pytest.raises(ValueError, match="not a URL"):
        create_trunk("plain_conv_test", pretrained="https://example.com/w.safetensors", width=4)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_trunk("plain_conv_test", pretrained=tmp_path / "missing.safetensors", width=4)
    with pytest.raises(ValueError, match="do not match trunk"):
        create_trunk("plain_conv_test", pretrained=tmp_path / "trunk.safetensors", width=8)


def test_hydranet_only_composes_the_parts_it_is_given():
    torch.manual_seed(0)
    cfg = config(name="regnet_tiny")
    parts = build_parts(cfg)
    model = HydraNet(parts.trunk, parts.neck, parts.tasks, parts.heads, parts.head_context, fusion=parts.fusion,
                     cfg=cfg)
    assert model.trunk is parts.trunk and model.fusion is parts.fusion and model.heads is parts.heads
    torch.manual_seed(0)
    same = create_model(cfg)  # the builder draws the same numbers in the same order
    assert list(same.state_dict()) == list(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    assert {k.split(".")[0] for k in model.state_dict()} == {"trunk", "neck", "fusion", "heads"}
    with pytest.raises(ValueError, match="need a fusion module"):
        HydraNet(parts.trunk, parts.neck, parts.tasks, parts.heads, parts.head_context, fusion=None)
    with pytest.raises(ValueError, match="do not match tasks"):
        HydraNet(parts.trunk, parts.neck, parts.tasks, nn.ModuleDict({"drivable": parts.heads["drivable"]}),
                 parts.head_context, fusion=parts.fusion)


def test_the_builtin_trunks_are_registered():
    assert {"regnet_tiny", "regnet_small", "regnety_400mf", "timm:"} <= set(TRUNKS)
