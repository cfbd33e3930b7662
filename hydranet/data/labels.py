"""Label specs: what a ``Sample`` label looks like — the label half of the Sample contract.

A ``LabelSpec`` says whether a label is *dense* (one tensor per sample, stacked by ``collate``) or
*ragged* (a dict of per-object tensors, collated to a list), its shape and dtype in words, the
fields a ragged label must carry, whether a dense label is per camera (``[N, H, W]``, checked
against the images), its class vocabulary and the task that learns from it.

The registry is owned by the data layer because producers (the synthetic world, source readers,
shard codecs) write and check labels without any model code: the built-in labels — those of the
seven built-in tasks and the world's auxiliary ground truth — are declared at the bottom of this
file. A plug-in task with a *new* label declares ``label_spec`` on its class and ``register_task``
adds it here when the task is imported (``import hydranet.tasks`` loads the installed plug-ins), so
a new label needs one task file and no edit in ``sample.py``, ``codec.py`` or ``manifest.py``.
Unknown labels raise ``KeyError`` listing the known ones.

Class vocabularies are per dataset: a source declares the names it produces (``Source.classes``)
and ``ClassMap`` maps them onto the model's vocabulary (``Setup.classes``; ``LabelSpec.vocabulary`` is a
label's default, the world's ``OBJECT_CLASSES`` for the object labels); classes without a mapping are
dropped *and counted* (``ClassMap.dropped``), never merged silently.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hydranet.setup import OBJECT_CLASSES

LIGHT_STATES: tuple[str, ...] = ("red", "yellow", "green")
SEMANTIC_CLASSES: tuple[str, ...] = (
    "sky", "road", "lane_marking", "sidewalk", "terrain", "building",
    "car", "truck", "pedestrian", "cone", "traffic_light", "pole",
    "bus", "bicycle", "motorcycle", "barrier",  # rendered when a setup's vocabulary names them
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
        raise KeyError(f"unknown label '{name}' (known: {sorted(LABEL_SPECS)}; a plug-in task's label is known "
                       "once the task is imported: import hydranet.tasks)")
    return LABEL_SPECS[name]


def is_ragged(name: str) -> bool:
    """Whether label ``name`` is ragged (per-object fields) rather than dense; ``KeyError`` if unknown."""
    return label_spec(name).kind == "ragged"


def known_labels() -> frozenset[str]:
    """Names of every registered label (built-in ones, plus those of plug-in tasks imported so far)."""
    return frozenset(LABEL_SPECS)


def task_labels() -> tuple[str, ...]:
    """Labels some task learns from (``LabelSpec.task`` set), in registration order."""
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


# The labels of the seven built-in tasks (task <name> learns from label <name>), in task-file order.
register_label(LabelSpec("bev_semantic", "dense", "[C, R, C']", "uint8", "multi-label BEV map on the BevGrid",
                         vocabulary=BEV_CLASSES, task="bev_semantic"))
register_label(LabelSpec("depth", "dense", "[N, H, W]", "float32",
                         "z-depth in metres along the camera axis; 0 = no target (sky, or no lidar return: "
                         "sparse lidar depth is this map with zeros where no point projects)", per_camera=True,
                         task="depth"))
register_label(LabelSpec("detection2d", "ragged", "boxes [M,4] (x1,y1,x2,y2 px), classes [M], camera [M], "
                         "visible [M], track_id [M]",
                         "float32/int64", "2D boxes per camera; visible = visible fraction 0..1",
                         fields=("boxes", "classes", "camera"), pixel_fields=("boxes",), vocabulary=OBJECT_CLASSES,
                         task="detection2d"))
register_label(LabelSpec("drivable", "dense", "[N, H, W]", "uint8", "1 = drivable road surface", per_camera=True,
                         task="drivable"))
register_label(LabelSpec("lanes", "dense", "[N, H, W]", "uint8", "0 none, 1 dashed, 2 solid, 3 road edge",
                         per_camera=True, vocabulary=LANE_KINDS, task="lanes"))
register_label(LabelSpec("objects3d", "ragged", "boxes [M,7] (x,y,z,l,w,h,yaw ego), velocity [M,2], "
                         "classes [M], track_id [M]",
                         "float32/int64", "3D boxes in the ego frame, metres/radians, velocity m/s",
                         fields=("boxes", "classes"), vocabulary=OBJECT_CLASSES, nan_fields=("velocity",),
                         task="objects3d"))
register_label(LabelSpec("traffic_light", "ragged", "boxes [L,4], camera [L], state [L], lane [L], track_id [L]",
                         "float32/int64", "traffic lights: box px, state (LIGHT_STATES), governed lane",
                         fields=("boxes", "camera", "state"), pixel_fields=("boxes",), vocabulary=LIGHT_STATES,
                         task="traffic_light"))

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

    def report(self) -> dict[str, dict[str, Any]]:
        """Per source class name, how many objects were ``kept`` and ``dropped`` so far (sorted by name), and the
        model class each kept source class became (``model_class``: ``{"bus": "truck"}``)."""
        kept = dict(sorted(self.kept.items()))
        return {"kept": kept, "dropped": dict(sorted(self.dropped.items())),
                "model_class": {src: self.vocabulary[self.mapping[src]] for src in kept}}  # type: ignore[index]
