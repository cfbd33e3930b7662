"""The Task contract — the unit of extension — and the registry.

A task is one file under ``hydranet/tasks/`` that subclasses ``Task`` and decorates it with
``@register_task``. It declares which feature space it reads (``camera`` or ``bev``) and which
``Sample`` label it learns from, and owns its head, loss, decoder, metric and drawing. Adding a task
is that one file plus one config line; nothing else in the system names tasks.

Shapes the model hands to heads:
- camera heads get ``dict[str, Tensor]`` of FPN levels, each ``[B*N, C, H/s, W/s]`` with the
  strides in ``HeadContext.camera_strides`` (cameras are folded into the batch: one batched call);
  outputs are ``dict[str, Tensor]`` of ``[B*N, ...]`` which the model unfolds to ``[B, N, ...]``.
- bev heads get ``[B, C, R, C']`` on the ``BevGrid``; outputs are ``dict[str, Tensor]`` ``[B, ...]``.

A task is created for a ``Setup`` (``create_task(name, setup, **options)``): the BEV grid its labels and
outputs live on, the rig, and its class vocabulary (``setup.classes[label]``) come from there, never from a
copy set while building a head. ``HeadContext`` says only what the features look like (channels, strides).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict, ValidationError
from torch import Tensor, nn

from hydranet.config_errors import format_validation_error
from hydranet.data import Batch, LabelSpec, known_labels, label_spec, register_label
from hydranet.metrics import Metric
from hydranet.registry import Options, Registry
from hydranet.setup import Setup


@dataclass(frozen=True)
class HeadContext:
    """What the features a head reads look like (the geometry is the task's ``setup``)."""

    camera_channels: int  # channels of every FPN level
    camera_strides: dict[str, int]  # FPN level name -> stride w.r.t. the input image
    bev_channels: int


class TaskOptions(Options):
    """Base of every task's options: unknown or mistyped fields are errors that name themselves."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(ABC):
    """Base class of every task. Instances hold the ``setup`` they were created for (None: the default
    ``Setup()``) and the task's options (from config, validated by its ``Options`` into ``cfg``), no weights."""

    name: ClassVar[str]
    space: ClassVar[Literal["camera", "bev"]]
    label: ClassVar[str]  # the Sample label this task learns from
    # How a NEW label is stored (dense/ragged, shape, vocabulary); registered with the task, so a plug-in
    # label needs no edit in hydranet.data. None: the label is already declared (the built-in labels are
    # part of the Sample contract in hydranet.data.labels, or another task declared it).
    label_spec: ClassVar[LabelSpec | None] = None
    # Higher is better for the headline metric (first key of Metric.compute)?
    higher_is_better: ClassVar[bool] = True

    # The task's options model (pydantic): ``cfg`` holds the validated options.
    Options: ClassVar[type[TaskOptions]] = TaskOptions

    def __init__(self, setup: Setup | None = None, options: TaskOptions | None = None, **values: Any) -> None:
        """``options``: already validated (``create_task``); else ``values`` are validated here. Raises
        ``ValueError`` naming the task and the field for a bad option."""
        self.setup = setup if setup is not None else Setup()
        self._vocabulary = self.setup.vocabulary(self.label)  # fixed by the setup: looked up once, not per loss
        if options is None:
            try:
                options = self.Options(**values)
            except ValidationError as e:
                raise ValueError(f"task '{self.name}': bad options ({format_validation_error(e, '', sep='; ')})") \
                    from None
        self.cfg = options
        self.options: dict[str, Any] = options.model_dump(exclude_unset=True)  # what the config said

    def vocabulary(self) -> tuple[str, ...]:
        """The class vocabulary of this task's label (``setup.classes[label]``); ``ValueError`` when the setup
        declares none."""
        if self._vocabulary is None:
            raise ValueError(f"{self.name}: the setup declares no class vocabulary for '{self.label}' "
                             "(setup.classes)")
        return self._vocabulary

    @abstractmethod
    def build_head(self, ctx: HeadContext) -> nn.Module:
        """The head module (see module doc for input/output shapes)."""

    @abstractmethod
    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss": scalar, ...parts}``. Samples with ``batch.present[self.label] == False`` must
        not contribute; with none present, return a zero that is still connected to ``outputs``."""

    @abstractmethod
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Any]:
        """Human outputs, one per sample, in the same format as this task's label (+ ``scores``)."""

    @abstractmethod
    def make_metric(self) -> Metric:
        """A fresh ``Metric`` that scores this task's ``decode`` output against ``targets`` (label format)."""

    def targets(self, batch: Batch) -> list[Any]:
        """Per-sample targets for ``Metric.update`` (``None`` where the label is absent)."""
        value = batch.labels.get(self.label)
        present = batch.present.get(self.label, torch.zeros(len(batch), dtype=torch.bool))
        if value is None:
            return [None] * len(batch)
        return [value[i] if bool(present[i]) else None for i in range(len(batch))]

    @abstractmethod
    def draw(self, views: Any, decoded: Any, ground_truth: bool = False) -> None:
        """Draw one sample's decoded output (or its label, same format) onto ``hydranet.viz.Views``."""

    @staticmethod
    def zero_loss(outputs: dict[str, Tensor]) -> Tensor:
        """A zero connected to every output, so DDP sees all head parameters used."""
        return sum(v.sum() * 0.0 for v in outputs.values())  # type: ignore[return-value]


# Built-ins: the modules of this package (one file per task); plug-ins: the ``hydranet.tasks`` entry points.
TASKS: Registry[type[Task]] = Registry("task", package="hydranet.tasks")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a ``Task`` subclass in ``TASKS`` under ``cls.name`` with its ``Options``, and its
    ``label_spec`` with ``hydranet.data.labels`` (owner task filled in). Returns ``cls`` unchanged.

    Raises ``ValueError`` when another class already holds ``cls.name``, when
    ``cls.label_spec.name`` differs from ``cls.label``, or when the task has no ``label_spec`` and its
    label is not declared (a typo in ``label`` fails here, not at the first batch)."""
    TASKS.register()(cls)
    if cls.label_spec is not None:
        if cls.label_spec.name != cls.label:
            raise ValueError(f"task '{cls.name}': label_spec is for '{cls.label_spec.name}', label is '{cls.label}'")
        register_label(replace(cls.label_spec, task=cls.label_spec.task or cls.name))
    elif cls.label not in known_labels():
        raise ValueError(f"task '{cls.name}' learns from label '{cls.label}', which is not declared "
                         f"(known: {sorted(known_labels())}): give the task a label_spec")
    return cls


def create_task(name: str, setup: Setup | None = None, **options: Any) -> Task:
    """The registered task ``name`` for ``setup`` (None: ``Setup()``) with ``options`` validated by its ``Options``;
    ``RegistryError`` lists the registered tasks for an unknown name and names the field of a bad option."""
    return TASKS.create(name, options, where=name, setup=setup)


def grid_raster_tasks(tasks: Mapping[str, Task]) -> list[str]:
    """The names, in order, of the tasks in ``tasks`` (name -> ``Task``) whose labels are rasterised on the BEV grid:
    a BEV task whose label is dense and not per camera (``bev_semantic``'s ``[C, R, C']`` map). Only these need data
    on the model's ``setup.grid`` to be scored or drawn beside its predictions; ``objects3d``'s boxes are in metres
    in the ego frame and fit a model of any grid (``predict``, ``view``, ``infer --ground-truth`` and ``eval``)."""
    on_grid = []
    for name, task in tasks.items():
        spec = label_spec(task.label) if task.label in known_labels() else None
        if task.space == "bev" and spec is not None and spec.kind == "dense" and not spec.per_camera:
            on_grid.append(name)
    return on_grid
