"""The trigger contract and registry.

A trigger looks at one frame of an unlabelled pool through the model's outputs and returns a
``Score``: a number in ``[0, 1]`` (0 = nothing interesting, 1 = as interesting as this trigger
gets) and a reason a labeller reads in the queue ("drivable: camera and BEV disagree on 31 % of the
road"). Triggers never see labels. Writing one is one file under ``hydranet/engine/triggers/``
with ``@register_trigger`` and its pydantic ``Options``; ``create_trigger(name, **options)`` builds it from the
CLI/config (``TRIGGERS``, the one registry mechanism of ``hydranet.registry``).

``FrameContext`` is what a trigger may read for frame ``i`` of a batch: the collated ``Batch``
(images, K, T, scene ids — labels are stripped by the miner), the raw head outputs, decoded outputs
per task (decoded once per batch and shared by every trigger), per-frame metadata a source exposes
(``lighting``, ``fog`` for the synthetic world), and for shadow mode the deployed graph's outputs.
Triggers that need order (temporal flicker) keep their own state keyed by ``scene_id`` and rely on
the miner visiting frames of a sequence in order.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from hydranet.data import Batch
from hydranet.eval import Prediction
from hydranet.registry import Options, Registry


class TriggerError(ValueError):
    """A bad trigger name or option; the message names it."""


@dataclass
class Score:
    """One trigger's verdict on one frame: ``value`` in [0, 1] and a reason in words."""

    value: float
    reason: str = ""


@dataclass
class BatchContext:
    """Everything computed once per batch and shared by every trigger: the model's ``Prediction`` on the batch
    (raw outputs, decoded outputs and probabilities, each computed on first use), per-frame metadata, and for
    shadow mode the deployed graph's prediction on the same frames."""

    prediction: Prediction
    model: Any  # HydraNet or DeployedModel
    metadata: list[dict[str, Any]]  # per frame: {"lighting": "night", "fog": 0.01, ...} when the source knows
    shadow_prediction: Prediction | None = None  # the deployed graph on the same frames
    shadow: Any = None  # the DeployedModel that produced ``shadow_prediction``

    @property
    def batch(self) -> Batch:
        """The collated frames (labels stripped by the miner)."""
        return self.prediction.batch

    @property
    def outputs(self) -> dict[str, dict[str, Tensor]]:
        """Raw head outputs: camera ``[B, N, ...]``, BEV ``[B, ...]``."""
        return self.prediction.outputs

    def tasks(self) -> dict[str, Any]:
        """The model's task objects by name."""
        return self.prediction.tasks

    def has(self, task: str) -> bool:
        """True when the batch's raw outputs include ``task``."""
        return task in self.outputs

    def decoded(self, task: str) -> list[Any]:
        """Decoded outputs of ``task`` for every frame of the batch (label format + ``scores``)."""
        return self.prediction.decoded(task)

    def probabilities(self, task: str) -> list[Tensor]:
        """Per-frame probabilities of a dense task that offers ``probabilities`` (drivable, bev_semantic)."""
        return self.prediction.probabilities(task)

    def shadow_decoded(self, task: str) -> list[Any]:
        """Decoded outputs of ``task`` from the deployed (shadow) graph for every frame. Raises ``TriggerError``
        when no shadow graph was given."""
        if self.shadow_prediction is None or self.shadow is None:
            raise TriggerError("shadow outputs are not available: pass the deployed graph (--shadow model.onnx)")
        return self.shadow_prediction.decoded(task)


@dataclass
class FrameContext:
    """Frame ``i`` of a ``BatchContext``."""

    ctx: BatchContext
    i: int

    @property
    def frame_id(self) -> str:
        """``"<scene_id>#<frame_index>"`` of this frame."""
        b = self.ctx.batch
        return f"{b.scene_id[self.i]}#{int(b.frame_index[self.i])}"

    @property
    def scene_id(self) -> str:
        """The frame's scene id."""
        return self.ctx.batch.scene_id[self.i]

    @property
    def frame_index(self) -> int:
        """The frame's index within its scene."""
        return int(self.ctx.batch.frame_index[self.i])

    @property
    def metadata(self) -> dict[str, Any]:
        """The source's metadata for this frame (e.g. ``lighting``, ``fog``); may be empty."""
        return self.ctx.metadata[self.i]

    def decoded(self, task: str) -> Any:
        """This frame's decoded outputs of ``task`` (see ``BatchContext.decoded``)."""
        return self.ctx.decoded(task)[self.i]


class TriggerOptions(Options):
    """Base of every trigger's options (pydantic, unknown fields are errors naming themselves)."""


class Trigger(ABC):
    """Base class of every trigger, created from its validated ``Options`` (``create_trigger``). ``tasks``: the
    heads it reads (a model lacking one is an error before mining starts, not a silent zero)."""

    name: ClassVar[str]
    Options: ClassVar[type[TriggerOptions]] = TriggerOptions
    tasks: ClassVar[tuple[str, ...]] = ()
    needs_shadow: ClassVar[bool] = False

    def __init__(self, options: TriggerOptions) -> None:
        self.options: dict[str, Any] = options.model_dump()  # every option's value (the queue's column names)

    def check(self, model_tasks: list[str]) -> None:
        """Raise ``TriggerError`` when the model lacks a head this trigger reads."""
        missing = [t for t in self.tasks if t not in model_tasks]
        if missing:
            raise TriggerError(f"trigger '{self.name}' needs task(s) {missing}; the model has {sorted(model_tasks)}")

    @abstractmethod
    def score(self, frame: FrameContext) -> Score:
        """The frame's score in [0, 1] and why."""


# Built-ins: the modules of this package (one file per trigger); plug-ins: the ``hydranet.triggers`` entry points.
TRIGGERS: Registry[type[Trigger]] = Registry("trigger", package="hydranet.engine.triggers", error=TriggerError)


def register_trigger(cls: type[Trigger]) -> type[Trigger]:
    """Class decorator: register a ``Trigger`` subclass under its ``name`` with its ``Options``
    (``TRIGGERS.register``). Raises ``ValueError`` when another class already holds that name."""
    return TRIGGERS.register()(cls)


def create_trigger(name: str, /, **options: Any) -> Trigger:
    """The registered trigger ``name`` created from ``options``; ``TriggerError`` names an unknown trigger (and
    lists the registered ones) or a bad option."""
    return TRIGGERS.create(name, options, where=name)


def parse_trigger_specs(text: str) -> list[tuple[str, float, dict[str, Any]]]:
    """``"entropy:drivable=2,night,rare:classes=cone"`` → ``[(name, weight, options)]``.

    Each comma-separated item is ``name[*weight][:key=value[;key=value]]`` (or the weight last:
    ``name:key=value*weight``); values parse as int,
    float or ``|``-separated lists, else strings."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        tail = re.match(r"^(.*)\*([^*:;=]+)$", item)  # weight written last: "condition:name=night*2"
        item, weight = (tail.group(1), tail.group(2)) if tail else (item, "")
        head, _, opts = item.partition(":")
        name, _, first = head.partition("*")
        weight = weight or first
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise TriggerError(f"trigger '{item}': weight '{weight}' is not a number") from None
        options: dict[str, Any] = {}
        for kv in filter(None, opts.split(";")):
            key, eq, value = kv.partition("=")
            if not eq:
                raise TriggerError(f"trigger '{item}': option '{kv}' must be key=value")
            options[key.strip()] = _parse_value(value.strip())
        out.append((name.strip(), w, options))
    if not out:
        raise TriggerError("no triggers given")
    return out


def _parse_value(v: str) -> Any:
    if "|" in v:
        return [_parse_value(x) for x in v.split("|")]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
