"""Config to parts to model: ``create_model(cfg)`` is the one way a ``ModelConfig`` becomes a network.

``build_parts`` turns the config into the injected parts — trunk (``hydranet.model.registry``),
FPN neck, BEV fusion (with its temporal module when ``fusion.temporal``), the tasks
(``hydranet.tasks`` registry) and their heads — and ``HydraNet`` only composes them (like
torchvision's ``GeneralizedRCNN``). Parts are built in a fixed order (trunk, neck, fusion, heads in
config order), so the same seed gives the same initial weights, and the module names
(``trunk.*``, ``neck.*``, ``fusion.*``, ``heads.<task>.*``) are those every checkpoint uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from torch import nn

from hydranet.config_errors import format_validation_error
from hydranet.model.config import ModelConfig
from hydranet.model.fusion import BevFusion
from hydranet.model.hydranet import HydraNet
from hydranet.model.registry import create_trunk
from hydranet.model.trunk import FPN
from hydranet.model.zoo import ZooError, pretrained_weights
from hydranet.tasks import HeadContext, Task, create_task


@dataclass
class ModelParts:
    """What ``HydraNet`` composes. ``fusion`` is None when no task reads BEV features."""

    trunk: nn.Module
    neck: nn.Module
    fusion: nn.Module | None
    tasks: dict[str, Task]
    heads: nn.ModuleDict
    head_context: HeadContext


def _build_tasks(cfg: ModelConfig) -> dict[str, Task]:
    """The configured tasks (config order), created for ``cfg.setup``; ``ValueError`` for an unknown feature
    space (``build_parts`` has refused an empty list)."""
    tasks: dict[str, Task] = {}
    for name, options in cfg.tasks.items():
        task = create_task(name, cfg.setup, **options)
        if task.space not in ("camera", "bev"):
            raise ValueError(f"task '{name}' declares space '{task.space}', expected 'camera' or 'bev'")
        tasks[name] = task
    return tasks


def build_parts(cfg: ModelConfig) -> ModelParts:
    """Every part of the network ``cfg`` describes, freshly initialised (draws from torch's RNG)."""
    if not cfg.tasks:
        raise ValueError("model.tasks is empty: at least one task is needed (a task name and its options)")
    trunk = create_trunk(cfg.trunk.name, cfg.trunk.pretrained, **cfg.trunk.options())
    neck = FPN(trunk.out_channels, trunk.strides, cfg.neck.channels, cfg.neck.min_level)
    tasks = _build_tasks(cfg)
    grid = cfg.setup.grid
    fusion = None
    if any(t.space == "bev" for t in tasks.values()):
        f = cfg.fusion
        temporal = f.temporal.model_dump() if f.temporal is not None else None
        fusion = BevFusion(grid, cfg.neck.channels, cfg.bev_channels, f.heights, f.levels, f.stride, f.channels,
                           f.encoder_blocks, temporal, f.min_depth)
    ctx = HeadContext(camera_channels=cfg.neck.channels, camera_strides=dict(neck.strides),
                      bev_channels=cfg.bev_channels)
    heads = nn.ModuleDict({name: task.build_head(ctx) for name, task in tasks.items()})
    return ModelParts(trunk, neck, fusion, tasks, heads, ctx)


def create_model(cfg: ModelConfig | str | dict, pretrained: bool = False) -> HydraNet:
    """A ``HydraNet`` from a ``ModelConfig``, a preset name (``MODEL_PRESETS``) or a config dict.
    Raises ``KeyError`` for an unknown preset/trunk/task and ``ValueError`` (pydantic's
    ``ValidationError``) naming the field of an invalid config.

    ``pretrained=True`` (timm's convention): ``cfg`` is a zoo name (``"tiny-world"``) or a preset with a zoo
    entry (``"tiny"``); the entry's network (its ``state.json`` ``model_config``: the preset with the
    overrides it was trained with) is built and its shipped weights loaded strictly
    (``hydranet.model.zoo``). Like any new module it is in train mode: call ``.eval()`` for inference.
    ``ZooError`` (a ``ValueError``) lists the names that have weights when ``cfg`` has none, and names
    the file when the entry's files are missing or damaged; ``TypeError`` when ``pretrained`` is not a bool."""
    if not isinstance(pretrained, bool):  # "yes", 1: a typo for True, or a path meant for another argument
        raise TypeError(f"create_model(..., pretrained=...) takes True or False, got {pretrained!r}")
    if pretrained:
        if not isinstance(cfg, str):
            raise ZooError("create_model(..., pretrained=True) takes a zoo or preset name (hydranet zoo lists them), "
                           f"not a {type(cfg).__name__}")
        model_cfg, weights, directory = pretrained_weights(cfg)
        try:
            model = create_model(ModelConfig.model_validate(model_cfg))
        except ValidationError as e:
            raise ZooError(format_validation_error(e, f"{directory / 'state.json'}: model_config (not valid for this "
                                                   "version)", "model_config", sep="; ")) from None
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise ZooError(f"{directory}: the weights do not match the entry's model_config ({e})") from None
        return model
    if isinstance(cfg, str):
        cfg = ModelConfig.preset(cfg)
    elif isinstance(cfg, dict):
        cfg = ModelConfig.model_validate(cfg)
    p = build_parts(cfg)
    return HydraNet(p.trunk, p.neck, p.tasks, p.heads, p.head_context, fusion=p.fusion, cfg=cfg)
