"""Data sources: a registry of readers, one file per format, each a map-style dataset of ``Sample``.

Built in: ``world`` (the synthetic 8-camera world), ``shards`` (hydranet's own tar shards) and
``nuscenes`` (through nuscenes-devkit). ``open_source({"kind": ..., **options})`` builds one;
``hydranet.datasets.open_dataset`` and training configs (``data.datasets.<name>: {kind: ..., ...}``) go
through it, and ``hydranet convert KIND --out SHARDS --option value`` writes any of them to shards.

How to add a source (say ``kitti``)
-----------------------------------
1. Create ``hydranet/data/sources/kitti.py``::

       from hydranet.data.sources import Source, SourceOptions, register_source

       class KittiOptions(SourceOptions):          # pydantic, extra="forbid": typos are errors
           root: str                                # the folder holding training/
           split: Literal["training"] = "training"

       @register_source("kitti")
       class KittiSource(Source):
           Options = KittiOptions
           path_option = "root"                     # "kitti:/data/kitti" fills this option
           labels = frozenset({"detection2d", "objects3d"})         # what it can produce
           classes = {"objects3d": ("Car", "Pedestrian", ...)}      # its own vocabulary
           default_class_map = {"Car": "car", "Pedestrian": "pedestrian", "Cyclist": "bicycle"}

           def __init__(self, options: KittiOptions):
               super().__init__(options)            # builds self.class_map from options.class_map
               self.camera_names = ("front",)       # the rig; K and T come per Sample
               self.frames = [...]                  # index the files; raise SourceError naming them
           def __len__(self): return len(self.frames)
           def __getitem__(self, i) -> Sample: ...  # images uint8 [N,3,H,W], K, T, labels
           # optional: label_present(i, label) -> bool without decoding images (training uses it)
           # optional: a ``setup`` property naming native sizes / the grid (default: from sample 0)

2. Import it at the bottom of this file (built-ins) or expose it through the ``hydranet.sources``
   entry-point group (plug-ins). Nothing else names sources.
3. Test it on a tiny fixture written in the official format by the test itself.

Rules every source keeps: ``Sample`` geometry follows ``hydranet/geometry.py`` (ego frame x forward,
y left, z up; OpenCV cameras; ``T_ego_from_cam`` per camera; ``T_world_from_ego``; timestamps in
seconds); images resized by ``image_size`` rescale K and nothing else; labels are the registered
label formats (``hydranet.data.labels``) with classes mapped through ``self.class_map`` onto the
vocabulary ``model_classes`` (unmapped classes are dropped and counted in ``self.class_map.dropped``);
missing files or tokens raise ``SourceError`` naming the file or token.

Every source reports its own ``setup`` (``hydranet.setup.Setup``): the rig its frames come from (camera
names, K, T_ego_from_cam), their image size, the BEV grid of its BEV labels (None without) and the class
vocabulary of its object labels; ``hydranet.setup.check_fits`` compares it with a model's.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cached_property
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch.utils.data import Dataset

from hydranet.data.labels import ClassMap
from hydranet.data.sample import Sample
from hydranet.setup import OBJECT_CLASSES, OBJECT_LABELS, VOCABULARIES, Setup, rig_of_frame


class SourceError(ValueError):
    """A source's files, tables or tokens are missing or malformed; the message names them."""


class SourceConfigError(ValueError):
    """A dataset config names an unknown kind or an unknown/invalid option; the message names the field."""


class SourceOptions(BaseModel):
    """Options every source takes. Subclasses add their own; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    frames: int | None = Field(default=None, ge=1)  # use only the first ``frames`` samples (None = all)
    class_map: dict[str, str | None] = Field(default_factory=dict, description=(
        "dataset class name -> model class name (null = drop), merged over the source's default map"))
    model_classes: list[str] | None = Field(default=None, description=(
        "the object vocabulary classes are mapped onto: a list or a named one (world, nuscenes); default the "
        "source's own default_vocabulary"))

    @field_validator("model_classes", mode="before")
    @classmethod
    def _named_vocabulary(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in VOCABULARIES:
                raise ValueError(f"unknown vocabulary '{v}'; named ones: {sorted(VOCABULARIES)} (or a list)")
            return list(VOCABULARIES[v])
        return v


class Source(Dataset):
    """Base of every source: a map-style dataset of ``Sample`` plus what it declares about itself."""

    kind: ClassVar[str]
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    path_option: ClassVar[str | None] = None  # the option a bare path fills in "kind:PATH"
    labels: ClassVar[frozenset[str]] = frozenset()  # labels this source can produce
    classes: ClassVar[dict[str, tuple[str, ...]]] = {}  # label -> the dataset's own class names
    default_class_map: ClassVar[dict[str, str | None]] = {}
    # True: ``class_map`` keys must be classes of ``classes``/``default_class_map`` (a typo is an error);
    # False for sources whose vocabulary is open (a user's own fleet labels).
    closed_vocabulary: ClassVar[bool] = False
    default_vocabulary: ClassVar[tuple[str, ...]] = OBJECT_CLASSES  # model_classes when the options give none

    camera_names: tuple[str, ...] = ()

    def __init__(self, options: SourceOptions):
        self.options = options
        self.model_classes = tuple(options.model_classes or self.default_vocabulary)
        own = set(self.default_class_map) | {c for names in self.classes.values() for c in names}
        unknown = sorted(set(options.class_map) - own)
        if unknown and self.closed_vocabulary:
            raise SourceConfigError(f"{self.kind}.class_map: {unknown} are not classes of this dataset "
                                    f"(its classes: {sorted(own)})")
        if not self.closed_vocabulary:  # an open vocabulary (a fleet's own names): model classes by name too
            own |= set(self.model_classes)
        # A class of the model vocabulary keeps its name; else the default map's target if the vocabulary has
        # it (nuScenes' bus is the world vocabulary's truck); else dropped and counted. The config's map wins.
        default = {c: c if c in self.model_classes else (
            self.default_class_map.get(c) if self.default_class_map.get(c) in self.model_classes else None)
            for c in sorted(own)}
        try:
            self.class_map = ClassMap(default | dict(options.class_map), self.model_classes, f"{self.kind}.class_map")
        except ValueError as e:
            raise SourceConfigError(str(e)) from None

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    @cached_property
    def setup(self) -> Setup:
        """What this source's frames are: by default the rig of sample 0 (camera names, K at the stored size,
        T_ego_from_cam), its image size, no BEV grid, and ``model_classes`` for the object labels it produces.
        Sources that know more (native sizes, a BEV grid) override it."""
        kept, dropped = self.class_map.kept.copy(), self.class_map.dropped.copy()
        sample = self[0]
        self.class_map.kept, self.class_map.dropped = kept, dropped  # reading sample 0 is not a conversion
        size = tuple(int(v) for v in sample.images.shape[-2:])
        names = sample.camera_names
        rig = rig_of_frame(self.kind, names, sample.intrinsics, sample.T_ego_from_cam, [size] * len(names))
        return Setup(image_size=size, rigs=(rig,), grid=None, classes=self.object_classes())

    def object_classes(self) -> dict[str, tuple[str, ...]]:
        """``{label: model_classes}`` for the object labels (``detection2d``, ``objects3d``) this source makes."""
        return {label: self.model_classes for label in OBJECT_LABELS if label in self.labels}

    def describe(self) -> dict[str, Any]:
        """What a shard manifest records as ``source``: kind, options, rig, labels, vocabulary."""
        return {"kind": self.kind, "options": self.options.model_dump(mode="json"),
                "camera_names": list(self.camera_names), "labels": sorted(self.labels),
                "classes": {k: list(v) for k, v in self.classes.items()}}


SOURCES: dict[str, type[Source]] = {}


def register_source(kind: str):
    """Class decorator: register a ``Source`` subclass under ``kind`` (the config's ``kind:``)."""

    def deco(cls: type[Source]) -> type[Source]:
        if kind in SOURCES and SOURCES[kind] is not cls:
            raise ValueError(f"source kind '{kind}' registered twice ({SOURCES[kind].__module__}, {cls.__module__})")
        cls.kind = kind
        SOURCES[kind] = cls
        return cls

    return deco


def _load_plugins() -> None:
    for ep in entry_points(group="hydranet.sources"):
        try:
            ep.load()
        except Exception as e:  # a broken plug-in must name itself
            raise ImportError(f"hydranet source plug-in '{ep.name}' ({ep.value}) failed to import: {e}") from e


def source_class(kind: str, where: str = "kind") -> type[Source]:
    """The ``Source`` class registered for ``kind``, loading ``hydranet.sources`` entry-point plug-ins
    if needed; raises ``SourceConfigError`` naming ``where`` and the registered kinds when unknown.
    """
    if kind not in SOURCES:
        _load_plugins()
    if kind not in SOURCES:
        raise SourceConfigError(f"{where}: unknown source kind '{kind}'; registered: {sorted(SOURCES)}")
    return SOURCES[kind]


def parse_options(config: Mapping[str, Any], where: str = "dataset") -> SourceOptions:
    """Validate ``{"kind": ..., **options}``; errors name ``where.<field>``."""
    if not isinstance(config, Mapping) or "kind" not in config:
        raise SourceConfigError(f"{where}: a dataset config needs 'kind' (one of {sorted(SOURCES)})")
    cls = source_class(str(config["kind"]), f"{where}.kind")
    try:
        return cls.Options.model_validate(dict(config))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown option (typo?)" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}{'.' + loc if loc else ''}: {msg.removeprefix('Value error, ')}")
        raise SourceConfigError("; ".join(problems)) from None


def open_source(config: Mapping[str, Any] | SourceOptions, where: str = "dataset") -> Source:
    """A source from its config (``{"kind": "nuscenes", "dataroot": ..., ...}``) or parsed options.
    The ``frames`` option is applied by the caller (``hydranet.datasets.open_dataset`` / training)."""
    options = config if isinstance(config, SourceOptions) else parse_options(config, where)
    return source_class(options.kind, f"{where}.kind")(options)


def parse_source_spec(text: str) -> dict[str, Any] | None:
    """``"kind:PATH"`` -> ``{"kind": kind, <path_option>: PATH}`` for a registered kind with a
    ``path_option``; None when ``text`` is not of that form."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in SOURCES or "/" in kind:
        return None
    cls = SOURCES[kind]
    if cls.path_option is None:
        raise SourceConfigError(f"'{text}': source '{kind}' takes no path; give a config mapping instead")
    return {"kind": kind, cls.path_option: rest}


# The ``world`` kind registers from ``hydranet.world.source`` (the world package sits right of data);
# ``hydranet.datasets`` imports every kind.
for _name in ("shards", "nuscenes", "kitti", "bdd100k", "frames"):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["SOURCES", "Source", "SourceOptions", "SourceError", "SourceConfigError", "register_source",
           "open_source", "parse_options", "source_class", "parse_source_spec"]
