"""``world``: the synthetic world (``hydranet.world``) as a registered source, rendered on the fly.

It lives in the world package (which sits right of ``hydranet.data``) and joins the source registry through
the ``hydranet.sources`` entry-point group (``pyproject.toml``), as a plug-in from any distribution would.

Options: ``world`` (``WorldConfig`` fields, or a path to a world YAML; its ``setup`` is what is rendered)
and ``frames`` (required: how many frames to render; enough whole scenes are generated to cover them).
Produces every label the world renders, in the setup's class vocabulary (no class mapping needed).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from hydranet.data import ALL_LABELS, Sample, Source, SourceOptions, register_source
from hydranet.setup import OBJECT_CLASSES, Setup
from hydranet.world.config import WorldConfig, load_world_config
from hydranet.world.dataset import SyntheticWorld


class WorldOptions(SourceOptions):
    """Options of ``kind: world``: ``world`` is a dict of ``WorldConfig`` fields or a world YAML path, and
    ``frames`` (required) how many frames to render; a missing ``frames`` or bad field raises ``ValueError``.
    """
    world: dict[str, Any] | str = Field(default_factory=dict)  # WorldConfig fields or a world YAML path

    @model_validator(mode="after")
    def _check(self) -> WorldOptions:
        if self.frames is None:
            raise ValueError("kind 'world' needs 'frames' (how many frames to render)")
        if isinstance(self.world, dict) and self.world:
            WorldConfig.model_validate(self.world)
        return self


@register_source("world")
class WorldSource(Source):
    """Map-style view of ``SyntheticWorld``; ``label_present`` answers without rendering."""

    Options = WorldOptions
    path_option = "world"
    labels = ALL_LABELS
    classes = {"detection2d": OBJECT_CLASSES, "objects3d": OBJECT_CLASSES}

    def __init__(self, options: WorldOptions, setup: Setup | None = None):
        super().__init__(options, setup)
        cfg = load_world_config(options.world or None)
        assert options.frames is not None  # checked by WorldOptions
        if options.frames > len(SyntheticWorld(cfg)):  # enough whole scenes for the requested frames
            cfg = cfg.model_copy(update={"num_scenes": -(-options.frames // cfg.frames_per_scene)})
        self.world = SyntheticWorld(cfg)
        self.camera_names = self.world.camera_names

    @property
    def setup(self) -> Setup:
        """The setup the world renders (its rig only)."""
        return self.world.setup

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> Sample:
        return self.world[index]

    def label_present(self, index: int, label: str) -> bool:
        """Whether sample ``index`` keeps ``label`` after ``drop_labels`` (no rendering needed)."""
        return bool(self.world.label_present(index, label))
