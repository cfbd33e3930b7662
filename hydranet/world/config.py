"""``WorldConfig``: everything that decides what the synthetic world renders.

A config plus ``(seed, index)`` fully determines a sample. Domain variables (lighting, fog, layout,
densities) are either fixed values — so an evaluation suite can pick "night + fog + intersection" —
or ``"random"``, in which case each *scene* draws its own value from its seed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hydranet.config_errors import format_validation_error
from hydranet.data import ALL_LABELS
from hydranet.setup import Rig, Setup
from hydranet.yaml_files import read_yaml_mapping

Lighting = Literal["day", "dusk", "night"]
Layout = Literal["straight", "curve", "intersection"]


class WorldConfig(BaseModel):
    """Synthetic driving world. Sample ``i`` is frame ``i % frames_per_scene`` of scene
    ``i // frames_per_scene``; ``len(world) = num_scenes * frames_per_scene``.

    What it renders is ``setup`` (``hydranet.setup.Setup``): the cameras of its rig ``rig`` (default the
    first) as given — K resized to ``setup.image_size``, T_ego_from_cam — the BEV labels on ``setup.grid``
    and the object classes of ``setup.classes``. A training config's world datasets render the model's
    setup (``hydranet.train.config``)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    num_scenes: int = Field(100, ge=1)
    frames_per_scene: int = Field(40, ge=1, le=10_000)
    rate_hz: float = Field(10.0, gt=0.0, le=100.0)
    setup: Setup = Field(default_factory=Setup)  # rigs, image size, BEV grid, classes: what is rendered
    rig: str | None = None  # which of setup.rigs to render (None: the first)

    # Domain variables: a fixed value, or "random" (drawn per scene from the seed).
    lighting: Lighting | Literal["random"] = "random"
    fog: float | Literal["random"] = "random"  # extinction per metre; 0 = clear, 0.03 = dense
    layout: Layout | Literal["random"] = "random"
    # Relative weights of the per-scene draws of a "random" layout and, at an intersection, of the phase of
    # the ego's signal: go (green), stop / wait (red), yellow (green, turning yellow, then red). Any weights
    # leave every other draw of the scene unchanged (one random number per draw whatever the weights).
    layout_weights: dict[str, float] = Field(
        default_factory=lambda: {"straight": 0.3, "curve": 0.3, "intersection": 0.4})
    signal_weights: dict[str, float] = Field(
        default_factory=lambda: {"go": 0.4, "stop": 0.25, "wait": 0.15, "yellow": 0.2})
    lanes_per_direction: tuple[int, int] = (1, 3)  # inclusive range drawn per scene, within 1..4
    traffic_density: float = Field(1.0, ge=0.0, le=4.0)  # ~vehicles per 40 m of lane at 1.0
    truck_fraction: float = Field(0.2, ge=0.0, le=1.0)
    pedestrian_density: float = Field(1.0, ge=0.0, le=4.0)  # ~walkers per 30 m of sidewalk at 1.0
    cone_probability: float = Field(0.35, ge=0.0, le=1.0)  # chance a scene has a work-zone of cones
    building_density: float = Field(1.0, ge=0.0, le=1.0)  # 0 = open country, 1 = city street
    street_lamps: bool = True
    distant_lights: bool = True  # city lights on the horizon at dusk/night
    ego_speed: tuple[float, float] = (7.0, 15.0)  # m/s, drawn per scene
    # Stop-and-go traffic: on roads without a red light the ego (and the cars behind it) brake to a
    # stop, stand still, and drive off again within the scene.
    ego_stop_and_go: bool = False
    sensor_noise: float = Field(2.0, ge=0.0, le=30.0)  # Gaussian std in 8-bit counts (x2 at night)
    # torch intra-op threads while rendering a sample (0 = leave torch's setting). The renderer's ops
    # are too small to gain from threads, and on a busy machine OpenMP threads spin-wait: 2 threads
    # were 10x slower than 1 on a loaded 2-core box. Scale out with DataLoader/generate workers.
    render_threads: int = Field(1, ge=0, le=256)

    # Labels
    drop_labels: dict[str, float] = Field(default_factory=dict)  # label -> fraction of samples without it
    cull_distance: float = Field(60.0, gt=5.0)  # agents farther than this are neither drawn nor labelled
    max_depth: float = Field(250.0, gt=1.0)  # depth label is 0 (no return) beyond this
    min_visible_pixels: int = Field(6, ge=1)  # smaller 2D boxes are not labelled
    min_visible_fraction: float = Field(0.05, ge=0.0, le=1.0)
    ego_path_seconds: float = Field(3.0, gt=0.0)

    @field_validator("fog")
    @classmethod
    def _fog(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0.0 <= v <= 0.2:
            raise ValueError(f"fog must be 'random' or an extinction in [0, 0.2] per metre, got {v}")
        return v

    @field_validator("lanes_per_direction")
    @classmethod
    def _lanes(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 4:
            raise ValueError(f"lanes_per_direction must be (min, max) with 1 <= min <= max <= 4, got {v}")
        return v

    @field_validator("ego_speed")
    @classmethod
    def _speed(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 40.0:
            raise ValueError(f"ego_speed must be (min, max) m/s with 0 <= min <= max <= 40, got {v}")
        return v

    @field_validator("layout_weights", "signal_weights")
    @classmethod
    def _weights(cls, v: dict[str, float], info: Any) -> dict[str, float]:
        keys = {"layout_weights": ("straight", "curve", "intersection"),
                "signal_weights": ("go", "stop", "wait", "yellow")}[info.field_name]
        if sorted(v) != sorted(keys):
            raise ValueError(f"{info.field_name} needs exactly the keys {list(keys)}, got {sorted(v)}")
        if any(not (math.isfinite(w) and w >= 0) for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"{info.field_name}: weights must be finite, >= 0 and not all 0, got {v}")
        return {k: float(v[k]) for k in keys}

    @field_validator("drop_labels")
    @classmethod
    def _drop(cls, v: dict[str, float]) -> dict[str, float]:
        for name, frac in v.items():
            if name not in ALL_LABELS:
                raise ValueError(f"unknown label '{name}' (known: {sorted(ALL_LABELS)})")
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"'{name}': must be a fraction in [0, 1], got {frac}")
        return v

    @model_validator(mode="after")
    def _rig_known(self) -> WorldConfig:
        if self.rig is not None and self.rig not in self.setup.rig_names():
            raise ValueError(f"rig: no rig '{self.rig}' in setup.rigs {self.setup.rig_names()}")
        return self

    # ---- derived objects -------------------------------------------------------------------
    @property
    def rendered_rig(self) -> Rig:
        """The rig this world renders (``setup.rigs[rig]``, default the first)."""
        return self.setup.rig(self.rig)

    @property
    def rendered_setup(self) -> Setup:
        """What this world's frames are: ``setup`` with the rendered rig only (``Source.setup``)."""
        return self.setup.only_rig(self.rig)

    @property
    def path_steps(self) -> int:
        """Number of future ego poses in ``ego_path``."""
        return max(1, round(self.ego_path_seconds * self.rate_hz))


def load_world_config(source: Any = None, overrides: dict[str, Any] | None = None) -> WorldConfig:
    """A ``WorldConfig`` from None (defaults), a dict, a YAML path or a ``WorldConfig``, with ``overrides``
    applied. A YAML file may be a ``WorldConfig`` or a file with a ``world:`` section (a training config's
    world datasets: ``hydranet.train.config.Config.world_config``). Errors are ``ValueError``s naming the
    file and the offending field."""
    where = "world config"
    if isinstance(source, WorldConfig):
        data = source.model_dump()
    elif source is None:
        data = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        where = str(source)
        data = read_yaml_mapping(source, ValueError, "a mapping of WorldConfig fields", empty={})
        if isinstance(data.get("data"), dict):
            raise ValueError(f"{where}: a training config, not a world config: its world datasets render "
                             "its model's setup (hydranet generate --config TRAINING.yaml --dataset NAME)")
        if isinstance(data.get("world"), dict):  # a file with a world section
            data = data["world"]
    data |= overrides or {}
    try:
        return WorldConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, where, sep="; ")) from None
