"""Label specs: what a ``Sample`` label looks like, declared by the task that consumes it.

A ``LabelSpec`` says whether a label is *dense* (one tensor per sample, stacked by ``collate``) or
*ragged* (a dict of per-object tensors, collated to a list), its shape and dtype in words, the
fields a ragged label must carry, whether a dense label is per camera (``[N, H, W]``, checked
against the images) and its class vocabulary. Tasks declare theirs as ``label_spec`` and
``register_task`` registers it, so a new label needs one task file and no edit in ``sample.py``,
``codec.py`` or ``manifest.py`` (those ask this registry). Ground truth no task consumes (the
world's ``semantic``, ``instance``, ``lane_lines``, ``ego_path``) is declared here.

``label_spec(name)`` imports ``hydranet.tasks`` (and its plug-ins) on the first unknown name, so a
reader that never imported the tasks still knows every label. Unknown labels raise ``KeyError``
listing the known ones.

Class vocabularies are per dataset: a source declares the names it produces (``Source.classes``)
and ``ClassMap`` maps them onto the model's vocabulary (``LabelSpec.vocabulary``); classes without
a mapping are dropped *and counted* (``ClassMap.dropped``), never merged silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

OBJECT_CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cone", "traffic_light")
LIGHT_STATES: tuple[str, ...] = ("red", "yellow", "green")
SEMANTIC_CLASSES: tuple[str, ...] = (
    "sky", "road", "lane_marking", "sidewalk", "terrain", "building",
    "car", "truck", "pedestrian", "cone", "traffic_light", "pole",
)
BEV_CLASSES: tuple[str, ...] = ("drivable", "lane_marking", "sidewalk", "vehicle", "pedestrian", "cone")
LANE_KINDS: tuple[str, ...] = ("none", "dashed", "solid", "road_edge")


@dataclass(frozen=True)
class LabelSpec:
    """How one ``Sample`` label is stored. ``shape``/``dtype`` are documentation ("[N, H, W]",
    "float32"); ``per_camera`` dense labels are checked to be ``[N, H, W]`` of the sample's images;
    ``fields`` are the tensors a ragged label must hold; ``vocabulary`` names its class ids."""

    name: str
    kind: Literal["dense", "ragged"]
    shape: str
    dtype: str
    description: str = ""
    per_camera: bool = False
    fields: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] | None = None
    task: str | None = None  # the task that consumes it (None: auxiliary ground truth)
    pixel_fields: tuple[str, ...] = ()  # ragged fields in image pixels (x1, y1, x2, y2): scaled on resize
    nan_fields: tuple[str, ...] = ()  # ragged fields where NaN means "unknown" (not trained, not scored)
    extra: dict[str, str] = field(default_factory=dict, compare=False)


LABEL_SPECS: dict[str, LabelSpec] = {}


def register_label(spec: LabelSpec) -> LabelSpec:
    """Add ``spec``; registering the same name twice with a different spec is an error."""
    old = LABEL_SPECS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"label '{spec.name}' declared twice with different specs: {old} vs {spec}")
    LABEL_SPECS[spec.name] = spec
    return spec


def label_spec(name: str) -> LabelSpec:
    """The spec of label ``name``; raises ``KeyError`` naming the known labels."""
    if name not in LABEL_SPECS:
        import hydranet.tasks  # noqa: F401 - tasks declare the labels they consume on import

    if name not in LABEL_SPECS:
        raise KeyError(f"unknown label '{name}' (known: {sorted(LABEL_SPECS)})")
    return LABEL_SPECS[name]


def is_ragged(name: str) -> bool:
    """Whether label ``name`` is ragged (per-object fields) rather than dense; ``KeyError`` if unknown."""
    return label_spec(name).kind == "ragged"


def known_labels() -> frozenset[str]:
    """Names of every registered label (tasks register theirs on import)."""
    import hydranet.tasks  # noqa: F401

    return frozenset(LABEL_SPECS)


def task_labels() -> tuple[str, ...]:
    """Labels some registered task consumes, in registration order."""
    import hydranet.tasks  # noqa: F401

    return tuple(n for n, s in LABEL_SPECS.items() if s.task is not None)


# Auxiliary ground truth of the synthetic world (no task consumes it; kept in shards).
register_label(LabelSpec("semantic", "dense", "[N, H, W]", "uint8", "per-pixel class id", per_camera=True,
                         vocabulary=SEMANTIC_CLASSES))
register_label(LabelSpec("instance", "dense", "[N, H, W]", "int32", "per-pixel instance id (0 = none), the "
                         "ids of track_id", per_camera=True))
register_label(LabelSpec("ego_path", "dense", "[T, 3]", "float32", "future ego (x, y, yaw) in the current ego "
                         "frame, metres/radians"))
register_label(LabelSpec("lane_lines", "ragged", "points [L, P, 3], kind [L]", "float32/int64",
                         "ego-frame lane polylines resampled to P points", fields=("points", "kind"),
                         vocabulary=LANE_KINDS))
register_label(LabelSpec("bev_semantic_known", "dense", "[C]", "uint8", "1 where the bev_semantic channel is "
                         "labelled; a source without a map knows vehicle/pedestrian but not drivable/lanes. "
                         "Absent = every channel known", vocabulary=BEV_CLASSES))


class ClassMap:
    """Maps a dataset's class names onto a model vocabulary; counts what it drops.

    ``mapping``: source class -> model class name (or None to drop on purpose). A source class missing
    from ``mapping`` is dropped too: both are counted in ``dropped`` by source class name, so a
    conversion report shows exactly what did not reach the model. Raises ``ValueError`` naming the
    entry when a target is not in ``vocabulary``.
    """

    def __init__(self, mapping: Mapping[str, str | None], vocabulary: Sequence[str], where: str = "class_map"):
        self.vocabulary = tuple(vocabulary)
        self.mapping: dict[str, int | None] = {}
        for src, dst in mapping.items():
            if dst is not None and dst not in self.vocabulary:
                raise ValueError(f"{where}.{src}: '{dst}' is not a model class (expected one of {self.vocabulary} "
                                 "or null to drop)")
            self.mapping[src] = None if dst is None else self.vocabulary.index(dst)
        self.dropped: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()

    def __call__(self, name: str) -> int | None:
        """The model class id of source class ``name``, or None (dropped and counted)."""
        idx = self.mapping.get(name)
        if idx is None:
            self.dropped[name] += 1
        else:
            self.kept[name] += 1
        return idx

    def report(self) -> dict[str, dict[str, int]]:
        """Per source class name, how many objects were ``kept`` and ``dropped`` so far (sorted by name)."""
        return {"kept": dict(sorted(self.kept.items())), "dropped": dict(sorted(self.dropped.items()))}
