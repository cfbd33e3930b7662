"""The source contract and registry: ``Source`` (a map-style dataset of ``Sample`` that reports its own
``Setup``), ``SourceOptions`` and ``SOURCES``. How to add a source: the package docstring."""


from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator
from torch.utils.data import Dataset

from hydranet.data.labels import ClassMap
from hydranet.data.sample import Sample
from hydranet.registry import Options, Registry
from hydranet.setup import OBJECT_CLASSES, OBJECT_LABELS, VOCABULARIES, Setup, rig_of_frame


class SourceError(ValueError):
    """A source's files, tables or tokens are missing or malformed; the message names them."""


class SourceConfigError(ValueError):
    """A dataset config names an unknown kind or an unknown/invalid option; the message names the field."""


class SourceOptions(Options):
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
    """Base of every source: a map-style dataset of ``Sample`` plus what it declares about itself. It is opened
    with its options and the model ``Setup`` it is opened for (``model_setup``; None: ``Setup()``, the
    defaults): a source that makes a label on the model's geometry makes it there (nuScenes rasterises
    ``bev_semantic`` on ``model_setup.grid``) and reports what it made in its own ``setup``."""

    kind: ClassVar[str]
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    path_option: ClassVar[str | None] = None  # the option a bare path fills in "kind:PATH"
    labels: ClassVar[frozenset[str]] = frozenset()  # labels this source can produce
    classes: ClassVar[dict[str, tuple[str, ...]]] = {}  # label -> the dataset's own class names
    default_class_map: ClassVar[dict[str, str | None]] = {}
    # True: ``class_map`` keys must be classes of ``classes``/``default_class_map`` (a typo is an error);
    # False for sources whose vocabulary is open (a user's own fleet labels): such a source checks the keys
    # itself once it knows the names its data uses (``refuse_unknown_classes``), as ``frames`` does.
    closed_vocabulary: ClassVar[bool] = False
    default_vocabulary: ClassVar[tuple[str, ...]] = OBJECT_CLASSES  # model_classes when the options give none

    camera_names: tuple[str, ...] = ()

    def __init__(self, options: SourceOptions, setup: Setup | None = None):
        self.options = options
        self.model_setup = setup if setup is not None else Setup()
        self.model_classes = tuple(options.model_classes or self.default_vocabulary)
        # What the source leaves out of its samples, by reason: counts that ``hydranet convert`` reports, so a
        # dropped box or label entry is never silent.
        self.skipped: dict[str, int] = {}
        own = set(self.default_class_map) | {c for names in self.classes.values() for c in names}
        if self.closed_vocabulary:
            self.refuse_unknown_classes(own)
        else:  # an open vocabulary (a fleet's own names): model classes by name too
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

    def refuse_unknown_classes(self, known: Iterable[str]) -> None:
        """``SourceConfigError`` naming every ``class_map`` key that is not in ``known`` (the dataset's own class
        names) and listing them: a key that matches no class of the data (a typo, another dataset's name) would
        otherwise map nothing, silently."""
        known = set(known)
        unknown = sorted(set(self.options.class_map) - known)
        if unknown:
            raise SourceConfigError(f"{self.kind}.class_map: {unknown} are not classes of this dataset "
                                    f"(its classes: {sorted(known)})")

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    @cached_property
    def setup(self) -> Setup:
        """What this source's frames are: by default the rig of sample 0 (camera names, K at the stored size,
        T_ego_from_cam), its image size, no BEV grid, and ``model_classes`` for the object labels it produces.
        Sources that know more (native sizes, a BEV grid) override it."""
        kept, dropped, skipped = self.class_map.kept.copy(), self.class_map.dropped.copy(), dict(self.skipped)
        sample = self[0]
        # Reading sample 0 is not a conversion: its counts are undone.
        self.class_map.kept, self.class_map.dropped, self.skipped = kept, dropped, skipped
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


# Built-ins: the modules of this package (one file per format); plug-ins, and the synthetic world's ``world``
# kind (hydranet.world sits right of data), through the ``hydranet.sources`` entry-point group.
SOURCES: Registry[type[Source]] = Registry("source", package="hydranet.data.sources", error=SourceConfigError)


def register_source(kind: str):
    """Class decorator: register a ``Source`` subclass under ``kind`` (the config's ``kind:``) with its
    ``Options``. Registering a kind twice with another class raises ``ValueError``."""

    def deco(cls: type[Source]) -> type[Source]:
        cls.kind = kind
        return SOURCES.register(kind)(cls)

    return deco


def source_class(kind: str) -> type[Source]:
    """The ``Source`` class registered for ``kind``; ``SourceConfigError`` lists the registered kinds when
    unknown."""
    return SOURCES.entry(kind).obj


def parse_options(config: Mapping[str, Any], where: str = "dataset") -> SourceOptions:
    """Validate ``{"kind": ..., **options}``; errors name ``where.<field>``."""
    if not isinstance(config, Mapping) or "kind" not in config:
        raise SourceConfigError(f"{where}: a dataset config needs 'kind' (one of {SOURCES.names()})")
    try:
        return SOURCES.validate(str(config["kind"]), dict(config), where)  # type: ignore[return-value]
    except SourceConfigError as e:
        raise SourceConfigError(f"{where}.kind: {e}" if str(e).startswith("unknown source") else str(e)) from None


def open_source(config: Mapping[str, Any] | SourceOptions, where: str = "dataset",
                setup: Setup | None = None) -> Source:
    """A source from its config (``{"kind": "nuscenes", "dataroot": ..., ...}``) or parsed options, opened for
    the model ``setup`` (None: the defaults; training passes the model's). The ``frames`` option is applied by
    the caller (``hydranet.datasets.open_dataset`` / training)."""
    options = config if isinstance(config, SourceOptions) else parse_options(config, where)
    return SOURCES.create(options.kind, options, where=where, setup=setup)


def parse_source_spec(text: str) -> dict[str, Any] | None:
    """``"kind:PATH"`` -> ``{"kind": kind, <path_option>: PATH}`` for a registered kind with a
    ``path_option``; None when ``text`` is not of that form."""
    kind, sep, rest = text.partition(":")
    if not sep or "/" in kind or kind not in SOURCES:
        return None
    cls = SOURCES[kind]
    if cls.path_option is None:
        raise SourceConfigError(f"'{text}': source '{kind}' takes no path; give a config mapping instead")
    return {"kind": kind, cls.path_option: rest}
