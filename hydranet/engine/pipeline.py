"""``pipeline.yaml``: the configuration of ``hydranet vacation`` (pydantic, unknown keys are errors).

```yaml
pool: synthetic:pool.yaml         # the unlabelled pool (anything open_dataset takes)
model: runs/base                  # the model to start from (run or checkpoint directory)
train_config: configs/base.yaml   # optional; default: the checkpoint's own training config
iterations: 3
mine:   {triggers: "entropy:task=drivable,condition:name=night", budget: 16, oversample: 4}
label:  {kind: oracle}            # or {kind: auto, teacher: runs/teacher, min_confidence: 0.3}
train:  {mode: finetune, steps: 100}   # or {mode: heads, tasks: [drivable], steps: 200}
eval:   {suites: [suites/night.yaml, suites/day.yaml], frames: 4}
export: {enabled: true, tasks: null}
```

Relative paths are relative to the pipeline file. A relative suite path is looked up next to the
pipeline file, then in the working directory, then among the shipped suites (``resolve_suite_path``),
like ``hydranet eval --suite``. ``hydranet vacation --set KEY=VALUE`` overrides a field as ``train --set``
does (``--set mine.budget=8``); a relative path given there (``--set model=runs/x``) is relative to the working
directory, as on any command line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hydranet.config_errors import format_validation_error
from hydranet.eval import resolve_suite_path
from hydranet.model import ZOO_SCHEME
from hydranet.train import ConfigError, apply_overrides
from hydranet.yaml_files import read_yaml_mapping


class PipelineError(ValueError):
    """A bad pipeline file; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MineStage(_Strict):
    """``mine:`` of a pipeline file: trigger spec string, frames labelled per iteration (``budget``),
    ``oversample`` factor for diverse selection, selection ``radius``, pool ``limit``, ``max_per_scene``, and an
    optional deployed ONNX graph for the shadow trigger (``"current"`` = the promoted export)."""

    triggers: str = "entropy:task=drivable,light_margin,flicker"
    budget: int = Field(16, ge=1)  # frames labelled per iteration
    oversample: int = Field(4, ge=1)
    radius: float | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1)  # mine only the first N pool frames
    max_per_scene: int | None = Field(None, ge=1)  # queue at most N frames of one scene (None: no cap)
    batch_size: int = Field(4, ge=1)
    shadow: str | None = None  # deployed graph for the shadow trigger ("current" = the promoted export)


class LabelStage(_Strict):
    """``label:`` of a pipeline file: ``oracle`` (the pool's own labels, optionally only ``labels``) or
    ``auto`` (a ``teacher`` checkpoint with confidence cut-offs in [0, 1] and a clip radius in frames)."""

    kind: Literal["oracle", "auto"] = "oracle"
    teacher: str | None = None  # auto: the teacher checkpoint
    labels: list[str] | None = None  # oracle: keep only these labels (None = all the pool has)
    min_confidence: float = Field(0.3, ge=0, le=1)
    min_frame_confidence: float = Field(0.0, ge=0, le=1)
    clip_radius: int = Field(20, ge=0)


class TrainStage(_Strict):
    """``train:`` of a pipeline file: ``finetune`` (all heads or ``tasks``) or ``heads`` (head-only on
    cached trunk features; ``tasks`` required), the step count, an optional learning rate and
    ``--set``-style config overrides."""

    mode: Literal["finetune", "heads"] = "finetune"
    steps: int = Field(100, ge=1)
    tasks: list[str] | None = None  # heads: the heads to train (required); finetune: None = all
    lr: float | None = Field(None, gt=0)
    overrides: list[str] = Field(default_factory=list)  # --set style, e.g. "train.batch_size=2"


class EvalStage(_Strict):
    """``eval:`` of a pipeline file: the regression suites (at least one), an optional frame cap and batch size."""

    suites: list[str] = Field(min_length=1)
    frames: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)


class ExportStage(_Strict):
    """``export:`` of a pipeline file: whether a promoted candidate is exported to ONNX, and which heads."""

    enabled: bool = True
    tasks: list[str] | None = None


class Pipeline(_Strict):
    """A data-engine pipeline file: the unlabelled ``pool``, the starting ``model`` checkpoint, an
    optional train config, and the stages run each iteration (mine → label → train → eval/gate →
    export → promote). Unknown fields are errors (strict)."""

    pool: str
    model: str
    train_config: str | None = None
    iterations: int = Field(1, ge=1, le=1000)
    mine: MineStage = Field(default_factory=MineStage)
    label: LabelStage = Field(default_factory=LabelStage)
    train: TrainStage = Field(default_factory=TrainStage)
    eval: EvalStage
    export: ExportStage = Field(default_factory=ExportStage)
    path: str = ""  # the file it came from

    def inputs(self) -> list[str]:
        """Every file or folder the pipeline reads (as written after ``load_pipeline``: absolute, ``KIND:PATH``
        for a pool): the pool, the starting model, the train config, the teacher, the shadow graph and the
        suites. ``hydranet.cli.guard`` checks the run's outputs against them."""
        found = [self.pool, self.model, self.train_config, self.label.teacher, *self.eval.suites]
        if self.mine.shadow not in (None, "current"):
            found.append(self.mine.shadow)
        return [p for p in found if p]


def _resolve(base: Path, value: str | None) -> str | None:
    """``value`` with a relative path made absolute against ``base``: a path, or the path of ``KIND:PATH``
    (``synthetic:pool.yaml``, ``shards:data/pool``); ``synthetic`` and URLs pass as they are."""
    if value is None or value.startswith(ZOO_SCHEME):  # zoo:NAME is a shipped model, not a path
        return value
    if "://" in value or value.startswith("synthetic") and not value.startswith("synthetic:"):
        return value
    kind, sep, rest = value.partition(":")
    if sep and re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        return f"{kind}:" + (str(base / rest) if rest and not Path(rest).is_absolute() else rest)
    return str(base / value) if not Path(value).is_absolute() else value


def _resolve_suite(base: Path, value: str) -> str:
    """Next to the pipeline file, else the working directory, else the shipped suites (``resolve_suite_path``)."""
    if Path(value).is_absolute():
        return value
    beside = base / value
    return str(beside) if beside.exists() else str(resolve_suite_path(value))


# The pipeline's path fields: a relative one given with --set is the working directory's, as on a command line.
_PATH_FIELDS = ("pool", "model", "train_config", "label.teacher")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """Read and validate a pipeline YAML with ``--set KEY=VALUE`` ``overrides`` applied (``apply_overrides``, as
    ``train --set``); relative paths (pool, model, train config, suites, teacher) resolve against the file's
    directory, those an override gives against the working directory.

    Raises ``PipelineError`` naming the file and field (and the overrides, when there are any): unreadable file,
    invalid YAML, not a mapping, a malformed override, a validation error, ``label.kind: auto`` without ``teacher``,
    ``train.mode: heads`` without ``tasks``."""
    p = Path(path)
    tree = read_yaml_mapping(p, PipelineError, "a mapping (pool, model, mine, label, train, eval, ...)")
    overrides = list(overrides or [])
    try:
        apply_overrides(tree, overrides)
    except ConfigError as e:
        raise PipelineError(f"{p}: {e}") from None
    for key in {text.split("=", 1)[0].strip() for text in overrides} & set(_PATH_FIELDS):
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node[section]
        if isinstance(node.get(name), str):
            node[name] = _resolve(Path.cwd(), node[name])
    where = f"{p} with --set {' '.join(overrides)}" if overrides else str(p)
    try:
        pipe = Pipeline.model_validate({**tree, "path": str(p)})
    except ValidationError as e:
        raise PipelineError(format_validation_error(e, where, sep="; ")) from None
    # resolved (absolute, no '..'): a run resumed from another directory, naming the same file by another
    # relative path, reads the same pipeline
    base = p.parent.resolve()
    upd: dict[str, Any] = {"pool": _resolve(base, pipe.pool), "model": _resolve(base, pipe.model),
                           "train_config": _resolve(base, pipe.train_config)}
    pipe = pipe.model_copy(update=upd)
    pipe.eval.suites = [_resolve_suite(base, s) for s in pipe.eval.suites]
    if pipe.label.teacher:
        pipe.label.teacher = _resolve(base, pipe.label.teacher)
    if pipe.label.kind == "auto" and not pipe.label.teacher:
        raise PipelineError(f"{p}: label.teacher: auto-labelling needs a teacher checkpoint")
    if pipe.train.mode == "heads" and not pipe.train.tasks:
        raise PipelineError(f"{p}: train.tasks: head-only training needs the heads to train")
    return pipe
