"""``world``: the synthetic world (``hydranet.world``) as a registered source, rendered on the fly.

It lives in the world package (which sits right of ``hydranet.data``) and joins the source registry through
the ``hydranet.sources`` entry-point group (``pyproject.toml``), as a plug-in from any distribution would.

Options: ``world`` (``WorldConfig`` fields, or a path to a world YAML; its ``setup`` is what is rendered) and
``frames`` (how many frames to render, enough whole scenes are generated to cover them; default the world's own
length, ``num_scenes × frames_per_scene``). The world renders every label in its setup's class vocabulary
(``setup.classes``): those are its classes. ``class_map`` maps them onto ``model_classes`` (default: that same
vocabulary) as every source does: ``detection2d`` and ``objects3d`` objects of a class mapped to another are
relabelled, those mapped to null (or to nothing) are left out with their boxes, and both are counted
(``class_map.report()``, the convert report). A key that is not a class of the world is refused, naming them.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor

from hydranet.data import ALL_LABELS, Sample, Source, SourceConfigError, SourceOptions, register_source
from hydranet.setup import OBJECT_LABELS, Setup, class_names
from hydranet.world.config import WorldConfig, load_world_config
from hydranet.world.dataset import SyntheticWorld


class WorldOptions(SourceOptions):
    """Options of ``kind: world``: ``world`` is a dict of ``WorldConfig`` fields or a world YAML path, and
    ``frames`` how many frames to render (None: the world's ``num_scenes × frames_per_scene``); a bad field raises
    ``ValueError``."""
    world: dict[str, Any] | str = Field(default_factory=dict)  # WorldConfig fields or a world YAML path
    frames: int | None = Field(default=None, ge=1, description=(
        "frames to render (scenes are added to cover them); default the world's own length, "
        "num_scenes x frames_per_scene"))

    @model_validator(mode="after")
    def _check(self) -> WorldOptions:
        if isinstance(self.world, dict) and self.world:
            WorldConfig.model_validate(self.world)
        return self


@register_source("world")
class WorldSource(Source):
    """Map-style view of ``SyntheticWorld`` with its object labels through ``class_map``; ``label_present``
    answers without rendering."""

    Options = WorldOptions
    path_option = "world"
    labels = ALL_LABELS
    closed_vocabulary = True  # the world's classes are its setup's vocabulary: a key outside it is a typo

    def __init__(self, options: WorldOptions, setup: Setup | None = None):
        cfg = load_world_config(options.world or None)
        if options.frames is not None and options.frames > len(SyntheticWorld(cfg)):  # enough whole scenes
            cfg = cfg.model_copy(update={"num_scenes": -(-options.frames // cfg.frames_per_scene)})
        self.world = SyntheticWorld(cfg)
        self.camera_names = self.world.camera_names
        # Per instance: the classes this world renders (its setup's), which the base class maps from.
        self.classes = {label: class_names(self.world.setup, label) for label in OBJECT_LABELS}  # type: ignore[misc]
        self.default_vocabulary = tuple(dict.fromkeys(c for names in self.classes.values() for c in names))  # type: ignore[misc]
        super().__init__(options, setup)
        # Each object label's output vocabulary: model_classes, else the label's own (both object labels share
        # one unless a setup gives them different vocabularies).
        self.vocabularies = {label: self.model_classes if options.model_classes else names
                             for label, names in self.classes.items()}
        self._ids = {label: self._id_table(label) for label in self.classes}

    def _id_table(self, label: str) -> list[str | None]:
        """Per rendered class id of ``label``, the model class name it becomes (None: dropped); ``SourceConfigError``
        for a target outside the label's vocabulary."""
        out = []
        for name in self.classes[label]:
            idx = self.class_map.mapping.get(name)
            target = None if idx is None else self.class_map.vocabulary[idx]
            if target is not None and target not in self.vocabularies[label]:
                raise SourceConfigError(f"world.class_map.{name}: '{target}' is not a {label} class of this world "
                                        f"({list(self.vocabularies[label])}); set model_classes or map it to one")
            out.append(target)
        return out

    @property
    def setup(self) -> Setup:
        """The setup the world renders (its rig only), with the object labels' vocabularies after ``class_map``."""
        return self.world.setup.model_copy(update={"classes": {**self.world.setup.classes, **self.object_classes()}})

    def object_classes(self) -> dict[str, tuple[str, ...]]:
        """``{label: vocabulary}`` of the object labels after ``class_map`` (``model_classes``, else the world's)."""
        return dict(self.vocabularies)

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> Sample:
        sample = self.world[index]
        for label in self.classes:
            if label in sample.labels:
                sample.labels[label] = self._mapped(label, sample.labels[label])
        return sample

    def _mapped(self, label: str, value: dict[str, Tensor]) -> dict[str, Tensor]:
        """``value`` (a ragged ``label``) with classes through ``class_map``: relabelled into the label's
        vocabulary, dropped objects left out with every per-object field; both counted in ``class_map``."""
        classes = value["classes"]
        vocabulary, names = self.vocabularies[label], self.classes[label]
        new = []
        for c in classes.tolist():
            self.class_map(names[c])  # counts kept / dropped per world class
            target = self._ids[label][c]
            new.append(-1 if target is None else vocabulary.index(target))
        ids = torch.tensor(new, dtype=classes.dtype)
        keep = ids >= 0
        m = len(classes)
        out = {k: v[keep] if isinstance(v, Tensor) and v.ndim and len(v) == m else v for k, v in value.items()}
        return out | {"classes": ids[keep]}

    def label_present(self, index: int, label: str) -> bool:
        """Whether sample ``index`` keeps ``label`` after ``drop_labels`` (no rendering needed)."""
        return bool(self.world.label_present(index, label))
