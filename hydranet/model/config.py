"""``ModelConfig`` (pydantic, strict) and the model presets.

The config is plain data so it round-trips through YAML and checkpoints (``model_dump()`` /
``ModelConfig.model_validate``); ``create_model`` in ``hydranet.model.builder`` turns it into weights.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from hydranet.config_errors import NumbersNotBools
from hydranet.model.registry import TRUNKS
from hydranet.model.trunk import FPN_MAX_LEVEL, min_image_side
from hydranet.setup import OBJECT_LABELS, VOCABULARIES, Setup, check_fits
from hydranet.tasks import TASKS, grid_raster_tasks


class _Strict(NumbersNotBools):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrunkConfig(BaseModel):
    """A registered trunk (``hydranet.model.registry.TRUNKS``: the RegNet presets of
    ``hydranet.model.trunk.TRUNK_PRESETS``, ``timm:<name>``, or a user's own ``@register_trunk``) and
    its options; every field besides ``name`` and ``pretrained`` is an option of that trunk, validated
    by its options model (a typo names ``trunk.<field>``). ``pretrained``: a local safetensors file of
    the trunk's weights (never a URL)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "regnet_tiny"
    pretrained: str | None = None

    def options(self) -> dict[str, Any]:
        """The trunk's own options (every field but ``name`` and ``pretrained``)."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_options(self) -> TrunkConfig:
        TRUNKS.validate(self.name, self.options(), where="trunk")
        return self


class NeckConfig(_Strict):
    """FPN neck (Lin et al. 2017): output ``channels`` and the finest level (2 = stride 4, 3 = stride 8)."""

    channels: int = Field(64, ge=1)
    min_level: int = Field(2, ge=2, le=5, description="finest FPN level: 2 = stride 4 (p2..p5), 3 = stride 8")


class TemporalConfig(_Strict):
    """The video module (``hydranet.model.temporal``): two queues of BEV maps and a ConvGRU."""

    time_queue: int = Field(2, ge=1, description="entries pushed every push_every_frames frames")
    space_queue: int = Field(2, ge=0, description="entries pushed every push_every_metres of ego travel")
    push_every_frames: int = Field(2, ge=1)
    push_every_metres: float = Field(2.0, gt=0.0)
    # Off by default: it costs latency. benchmarks/temporal.py chose r = 3 over r = 0 (3D mAP), then r = 1 over
    # r = 2 and 3 (velocity, latency) (docs/decisions.md, "The video memory" and "Velocity from video on the
    # reference trunk"); configs/temporal.yaml turns it on at 1.
    correlation_radius: int = Field(0, ge=0, le=4, description="cells: per time-queue entry, the soft-argmax "
                                    "motion (m/s) and confidence read from a (2r+1)^2 cost volume (0 = off)")


class FusionConfig(_Strict):
    """Camera-to-BEV fusion (Simple-BEV, Harley et al. 2023: bilinear sampling at 3D reference points):
    reference heights (ego z, metres), FPN levels sampled, fusion stride relative to the BEV grid,
    channels, BEV encoder blocks, optional temporal memory (``true`` = defaults) and the minimum
    camera depth (camera z, metres) a point is sampled at."""

    heights: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0], min_length=1,
                                 description="reference-point heights above the ground (ego z, metres)")
    levels: list[str] = Field(default_factory=lambda: ["p3"], min_length=1, description="FPN levels sampled")
    stride: int = Field(2, ge=1, description="fusion runs at grid cell size × stride, the encoder upsamples back")
    channels: int = Field(64, ge=1)
    encoder_blocks: int = Field(2, ge=1)
    temporal: TemporalConfig | None = Field(None, description="video memory; true = defaults, false/null = off")
    min_depth: float = Field(0.3, gt=0.0, description="points closer than this (camera z, m) are not sampled")

    @field_validator("temporal", mode="before")
    @classmethod
    def _temporal_flag(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v


class ModelConfig(_Strict):
    """Everything that decides the model's weights. ``setup``: the rigs, image size, BEV grid and class
    vocabularies the model is built for (``hydranet.setup.Setup``; the weights depend on the image size, the
    grid and the vocabularies, not on the rigs: cameras are folded into the batch, K and T are inputs).
    ``tasks``: task name → that task's options."""

    trunk: TrunkConfig = Field(default_factory=TrunkConfig)
    neck: NeckConfig = Field(default_factory=NeckConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    bev_channels: int = Field(64, ge=1)
    setup: Setup = Field(default_factory=Setup)
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("setup", mode="before")
    @classmethod
    def _network_input_size(cls, v: Any) -> Any:
        # Before the Setup's own check (any image, a source's or a camera's: at least 8 pixels a side), so that a
        # network input too small is always told the network's minimum (min_image_side), whatever its size.
        size = v.get("image_size") if isinstance(v, dict) else getattr(v, "image_size", None)
        try:
            if any(isinstance(x, bool) for x in size):
                raise TypeError("a YAML true/false is not a pixel count")
            h, w = (int(x) for x in size)
        except (TypeError, ValueError):  # absent (the default) or malformed: the Setup's own check names it
            return v
        side = min_image_side()
        if min(h, w) < side:  # reported at setup.image_size (a --set of it is named as typed), not at setup
            message = (f"({h}, {w}) is too small for the network: H and W must be at least {side} pixels, the stride "
                       f"of its coarsest feature level (p{FPN_MAX_LEVEL})")
            raise ValidationError.from_exception_data("Setup", [InitErrorDetails(
                type=PydanticCustomError("value_error", message), loc=("image_size",), input=size)])
        return v

    @field_validator("setup")
    @classmethod
    def _network_input(cls, v: Setup) -> Setup:
        if v.grid is None:
            raise ValueError("grid: a model needs a BEV grid")
        return v

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:  # a network needs at least one head (before: an error from the builder, naming no field)
            raise ValueError(f"at least one task is needed: a task name and its options, e.g. `drivable: {{}}` "
                             f"(tasks: {sorted(TASKS)})")
        for name, options in v.items():  # the options alone: the setup is checked by its own validator
            TASKS.validate(name, options or {}, where=name)
        return v

    @model_validator(mode="after")
    def _vocabularies(self) -> ModelConfig:
        for name in self.tasks:
            label = TASKS[name].label
            if label in OBJECT_LABELS and self.setup.vocabulary(label) is None:
                raise ValueError(f"setup.classes.{label}: task {name} needs a class vocabulary (a list of names, or "
                                 f"a named one: {sorted(VOCABULARIES)})")
        return self

    @model_validator(mode="after")
    def _levels(self) -> ModelConfig:
        known = [f"p{lvl}" for lvl in range(self.neck.min_level, FPN_MAX_LEVEL + 1)]
        bad = [lvl for lvl in self.fusion.levels if lvl not in known]
        if bad:
            raise ValueError(f"fusion.levels {bad} not produced by the neck (neck.min_level={self.neck.min_level} "
                             f"gives {known})")
        grid = self.setup.grid
        assert grid is not None  # _network_input
        if grid.rows % self.fusion.stride or grid.cols % self.fusion.stride:
            raise ValueError(f"fusion.stride {self.fusion.stride} must divide the BEV grid shape {grid.shape}")
        return self

    def check_data(self, data: Setup, source: str, model_name: str = "the model", *,
                   labels: Collection[str] | None = None, remedy: str = "") -> None:
        """``hydranet.setup.check_fits`` of a data setup against this model's, for its tasks' labels, and the BEV
        grid for the tasks whose labels lie on it (``hydranet.tasks.grid_raster_tasks``: ``bev_semantic``'s map;
        ``objects3d``'s boxes are in metres and encoded on the model's grid); raises ``SetupMismatchError`` naming
        ``source``, the field, both values and those tasks. ``labels``: the labels the data is read for (default:
        every task's), so only the tasks learning from them count; ``remedy``: a way on beside rendering or
        converting the data for the model's grid."""
        tasks = {t: TASKS[t] for t in self.tasks if labels is None or TASKS[t].label in labels}
        ways = ["render or convert the data for the model's setup.grid", *([remedy] if remedy else [])]
        check_fits(data, self.setup, source, labels=[task.label for task in tasks.values()],
                   grid_tasks=grid_raster_tasks(tasks), remedy=", or ".join(ways), model_name=model_name)

    @staticmethod
    def preset(name: str, **overrides: Any) -> ModelConfig:
        """A preset from ``MODEL_PRESETS`` with overrides merged in: sections (``fusion={"temporal": True}``)
        are merged key by key, ``tasks`` is replaced so a config lists exactly the tasks it has."""
        if name not in MODEL_PRESETS:
            raise KeyError(f"unknown model preset '{name}'; presets: {sorted(MODEL_PRESETS)}")
        data = MODEL_PRESETS[name].model_dump(exclude_unset=True)  # set fields only: a default rig is not pinned
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "tasks":
                data[key] = data[key] | value
            else:
                data[key] = value
        return ModelConfig.model_validate(data)


ALL_TASKS: tuple[str, ...] = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic",
                              "objects3d")

MODEL_PRESETS: dict[str, ModelConfig] = {
    # 2 CPU cores, 8 cameras at 128×256: sized so a training step stays well under a second per sample.
    "tiny": ModelConfig(
        trunk=TrunkConfig(name="regnet_small"),
        neck=NeckConfig(channels=32, min_level=2),
        fusion=FusionConfig(heights=[0.0, 0.5, 1.0, 2.0], levels=["p3"], stride=2, channels=32, encoder_blocks=1),
        bev_channels=32,
        tasks={name: {} for name in ALL_TASKS},
    ),
    # One GPU: RegNetY-400MF, full FPN, two levels sampled into BEV at 7 heights.
    "base": ModelConfig(
        trunk=TrunkConfig(name="regnety_400mf"),
        neck=NeckConfig(channels=128, min_level=2),
        fusion=FusionConfig(heights=[-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0], levels=["p3", "p4"], stride=2,
                            channels=128, encoder_blocks=2),
        bev_channels=128,
        setup=Setup(image_size=(256, 512)),
        tasks={name: {} for name in ALL_TASKS},
    ),
}
