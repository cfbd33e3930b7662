"""The training configuration: one YAML file with ``data``, ``model`` and ``train`` sections.

Every section is a pydantic model with ``extra="forbid"``, so a typo is an error, and every error
names the YAML file and the dotted field path, e.g.::

    configs/demo.yaml: train.scheduler.kind: unknown 'foo'; expected 'all', 'round_robin', 'proportional' or ...

The ``model`` section is validated by the model package's ``ModelConfig`` — its ``setup`` (rigs, image size,
BEV grid, class vocabularies) is declared there once — and a world dataset's ``world`` section by
``WorldConfig``. The model's setup flows into the data when a dataset is opened (``source_config``): world
datasets render it, real sources resize to its image size and map onto its classes unless their section says
otherwise (``hydranet.datasets.source_config``), and are opened for it (their BEV labels on its grid).
``--set train.lr=1e-3`` style overrides are applied to the raw YAML tree before validation, so they get the same
checks and messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hydranet.config_errors import NumbersNotBools, field_messages, format_field_messages
from hydranet.data import SourceConfigError, parse_options
from hydranet.model import MODEL_PRESETS, ModelConfig
from hydranet.tasks import TASKS
from hydranet.train.balancing import BalancingConfig
from hydranet.world import WorldConfig, load_world_config
from hydranet.yaml_files import read_yaml_mapping, yaml_error_message


class ConfigError(ValueError):
    """A bad config: the message names the file and the field.

    ``fields`` maps each dotted field path that failed validation to its message (``{"train.lr": "Input
    should be a valid number..."}``); it is empty for errors that are not about one field (a missing file,
    bad YAML). ``general``: the message's lines that name no single field (they come first)."""

    def __init__(self, message: str, fields: dict[str, str] | None = None, general: list[str] | None = None) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})
        self.general = list(general or [])


class _Strict(NumbersNotBools):
    # allow_inf_nan=False: `train.lr: inf` or `.nan` anywhere is an error naming the field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


class DatasetConfig(BaseModel):
    """One source of frames: ``kind`` names a registered source (``hydranet.data.sources``: world,
    shards, nuscenes, ...) and every other field is that source's option, validated by the source's
    own options model, so unknown kinds and options are errors naming the field."""

    model_config = ConfigDict(extra="allow")

    kind: str
    path: str | None = None  # shards: directory written by `hydranet generate` / `hydranet convert`
    world: dict[str, Any] | str = Field(default_factory=dict)  # world: WorldConfig fields, or a world YAML's path
    frames: int | None = Field(default=None, ge=1)  # world: frames to render; others: limit (None = all)

    def options(self) -> dict[str, Any]:
        """The source config ``{"kind": ..., **options}`` (unset compatibility fields left out)."""
        out = {"kind": self.kind, **(self.model_extra or {})}
        if self.frames is not None:
            out["frames"] = self.frames
        if self.path is not None:
            out["path"] = self.path
        if self.world or self.kind == "world":
            out["world"] = self.world
        return out

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:

        try:
            parse_options(self.options(), "")
        except SourceConfigError as e:  # "" prefix: the caller's path (data.datasets.<name>) comes first
            raise ValueError(str(e).replace(".kind: ", "kind: ").lstrip(".").removeprefix(": ")) from None
        return self


class TaskDataConfig(_Strict):
    """Per-task dataset choice: which datasets carry this task's labels, and how many to use."""

    datasets: list[str] | None = None  # None = every dataset in data.datasets
    max_samples: int | None = Field(default=None, ge=1)  # cap the task's index list (deterministic)


class DataConfig(_Strict):
    """The ``data`` section: named training sources (concatenated), per-task dataset choices, the eval source.

    Validation fails (``ConfigError`` from ``load_config``) when ``datasets`` is empty or a task names an
    unknown dataset.
    """

    datasets: dict[str, DatasetConfig]  # name -> source; the training set is their concatenation
    tasks: dict[str, TaskDataConfig] = Field(default_factory=dict)
    eval: DatasetConfig | None = None  # held-out frames for the periodic eval hook and the demo report

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.datasets:
            raise ValueError("data.datasets must name at least one dataset")
        for task, tc in self.tasks.items():
            for name in tc.datasets or []:
                if name not in self.datasets:
                    raise ValueError(f"tasks.{task}.datasets: unknown dataset '{name}'; "
                                     f"expected one of {sorted(self.datasets)}")
        return self


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


class SchedulerConfig(_Strict):
    """How micro-batches are assigned to tasks (see hydranet/train/scheduler.py)."""

    kind: Literal["all", "round_robin", "proportional", "temperature"] = "all"
    temperature: float = Field(default=2.0, gt=0)  # p_t ∝ n_t^(1/T); T=1 proportional, T→∞ uniform
    # Which losses a micro-batch drawn for task t trains: every task whose label is present in it
    # ("present", the sample-efficient default) or only t ("scheduled").
    loss_tasks: Literal["present", "scheduled"] = "present"


class ClipConfig(_Strict):
    """Training on clips (``hydranet/train/clips.py``): ``length`` consecutive frames per sequence."""

    length: int = Field(default=4, ge=1)  # frames per clip = truncated-BPTT horizon
    burn_in: int = Field(default=0, ge=0)  # leading frames run without gradient or loss (fill the memory)

    @model_validator(mode="after")
    def _burn_in(self) -> ClipConfig:
        if self.burn_in >= self.length:
            raise ValueError(f"clip.burn_in ({self.burn_in}) must be < clip.length ({self.length})")
        return self


class TrainConfig(_Strict):
    """The ``train`` section: optimisation (AdamW or Muon + AdamW, warmup-cosine lr, clipping), precision, device, data
    loading, task scheduling, clips, balancing, logging/checkpoint/eval cadence, time and skip limits.
    Durations are in optimizer steps unless the name ends in ``_s`` (seconds)."""

    steps: int = Field(default=1000, ge=1)  # optimizer steps
    batch_size: int = Field(default=8, ge=1)  # per process, per micro-batch
    grad_accum: int = Field(default=1, ge=1)  # micro-batches per optimizer step
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    # adamw: AdamW for every parameter. muon: Muon for the hidden layers' kernels and AdamW for the rest (the
    # pixels' first conv, the heads' output convs, biases, norms), one lr and schedule (hydranet.train.optim).
    optimizer: Literal["adamw", "muon"] = "adamw"
    # muon: the peak lr of Muon's groups (None: lr), on the same warmup-cosine schedule; AdamW's groups keep lr.
    # adamw has no Muon groups and ignores it, so `--set train.optimizer=adamw` switches a Muon config as it is.
    muon_lr: float | None = Field(default=None, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: float | None = Field(default=1.0, gt=0)  # None disables clipping
    # Probability that a camera counts as failed in a training sample (fusion masks it: camera_valid),
    # so BEV heads learn to work with a dead camera. 0 disables; camera heads always see every camera.
    camera_dropout: float = Field(default=0.0, ge=0, lt=1)
    # auto: bf16 autocast where the device has native bf16 (CUDA Ampere+, CPUs with AVX512-BF16/AMX), else
    # fp32 (hydranet.train.precision); bf16 on a device without it is refused.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True  # NHWC weights for the convolutions: oneDNN/cuDNN's fast layout
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # torch intra-op threads (None: torch default)
    # Decode every training sample once and keep it in RAM (uint8 images, labels as stored): a training step
    # then reads tensors instead of decoding files, so no loader process is needed and every core computes.
    # Costs about 0.6 MB per 8-camera 96x192 frame; use it for sets that fit in memory.
    in_memory: bool = False
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    clip: ClipConfig | None = None  # None: single frames; set: clips of consecutive frames (video)
    balancing: BalancingConfig = Field(default_factory=BalancingConfig)
    log_every: int = Field(default=10, ge=1)
    ckpt_every: int = Field(default=0, ge=0)  # 0: only the final checkpoint
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int = Field(default=0, ge=0)  # 0: no periodic eval
    eval_batches: int = Field(default=4, ge=1)
    dist_timeout_s: float = Field(default=300.0, gt=0)  # collectives fail instead of hanging forever
    # Safety net for fixed budgets (the demo): stop, checkpoint and report once training has run this
    # long, even if `steps` is not reached (the learning rate then has not fully decayed).
    time_limit_s: float | None = Field(default=None, gt=0)
    # Stop with an error (naming the step and the tasks) after this many consecutive steps skipped
    # for a non-finite loss or gradient, instead of "training" forever on nothing.
    max_consecutive_skips: int = Field(default=20, ge=1)
    # BatchNorm statistics over the global batch when training on several ranks (torch SyncBatchNorm;
    # on CPU/gloo hydranet's equivalent): N ranks at batch B/N then equal one process at batch B.
    sync_batchnorm: bool = False


class EvalConfig(_Strict):
    """The ``eval`` section: eval batch size, how many eval frames (None: all), report pictures to draw."""

    batch_size: int = Field(default=4, ge=1)
    frames: int | None = Field(default=None, ge=1)  # None: the whole eval dataset
    pictures: int = Field(default=4, ge=0)  # prediction-vs-ground-truth images the report draws


class Config(_Strict):
    """The whole training config (one YAML file): ``data``, ``model`` (a ``ModelConfig`` tree, optionally a
    ``preset`` plus overrides), ``train`` and ``eval``. Build it with ``load_config`` or ``config_from_dict``,
    which raise ``ConfigError`` naming the file and the field."""

    data: DataConfig
    model: dict[str, Any]  # validated by hydranet.model.ModelConfig (see model_config())
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("model")
    @classmethod
    def _check_model(cls, v: dict[str, Any]) -> dict[str, Any]:
        # A field validator, so a bad model is reported at `model` beside the other sections' errors
        # (``config_from_dict`` then gives its precise paths).
        ModelConfig.model_validate(resolve_model_dict(v))
        return v

    def resolved_model(self) -> Any:
        """The validated ``ModelConfig`` (``model.preset: tiny`` + overrides, deep-merged)."""
        return ModelConfig.model_validate(resolve_model_dict(self.model))

    def task_names(self) -> list[str]:
        """Sorted names of the model's tasks (after resolving the preset)."""
        return sorted(resolve_model_dict(self.model).get("tasks") or {})


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_model_dict(model: dict[str, Any]) -> dict[str, Any]:
    """``{preset: tiny, neck: {channels: 48}}`` -> the preset's fields with the overrides merged in.
    ``tasks`` is replaced, not merged, so a config lists exactly the tasks it trains; a section without a preset
    or ``tasks`` has none (``{}``: refused by ``ModelConfig`` naming ``model.tasks``, not later by the builder naming
    no field). Raises ``ConfigError`` (field ``preset``) for an unknown preset."""
    model = dict(model)
    name = model.pop("preset", None)
    if name is None:
        return {"tasks": {}, **model}

    if name not in MODEL_PRESETS:
        message = f"unknown '{name}'; expected one of {sorted(MODEL_PRESETS)}"
        raise ConfigError(f"preset: {message}", {"preset": message})
    base = MODEL_PRESETS[name].model_dump(mode="json", exclude_unset=True)  # a default rig is not pinned
    tasks = model.pop("tasks", None)
    merged = _deep_merge(base, model)
    if tasks is not None:
        merged["tasks"] = tasks
    return merged


# ---------------------------------------------------------------------------------------------
# loading, overrides, error messages
# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-3`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_message(e, f"--set {text!r}", raw)) from None
    # YAML reads "1e-3" as a string (it wants a dot); users mean a number.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return path, value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (``train.lr=1e-3``) to the raw YAML ``tree`` in place, creating missing
    sections; returns ``tree``. Raises ``ConfigError`` for a malformed override or a key through a non-section."""
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"--set {text!r}: '{part}' is not a section")
            node = node[part]
        node[path[-1]] = value
    return tree


def config_from_dict(tree: dict[str, Any], where: str = "<config>") -> Config:
    """Validate a raw tree; errors name ``where`` and the field path. Raises ``ConfigError`` listing every
    failed field (``ConfigError.fields``), the lazily validated sections (the model, each task's options, each
    world) included."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: expected a mapping with sections data, model, train")
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        # Nested validators (ModelConfig, a task's options, WorldConfig) raise their own ValidationError: pydantic
        # wraps it as one value error at the section (or skips it when another field failed first), so each such
        # section is validated again on its own for its paths, and a section's wrapped error gives way to them.
        fields, loose = _nested_errors(tree)
        for field, message in field_messages(e).items():
            fields.setdefault(field, message)
        fields = _most_precise(fields)
        lines = [f"{where}: {message}" for message in loose]
        raise ConfigError("\n".join([*lines, format_field_messages(fields, where)] if fields else lines),
                          fields, lines) from None
    return cfg


_SECTION_ORDER = ("data", "model", "train")


def _most_precise(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` without an entry whose field holds another reported field (``data.datasets.demo`` gives way
    to ``data.datasets.demo.world.fog``), in the config's section order."""
    kept = {f: m for f, m in fields.items() if not any(g.startswith(f + ".") for g in fields)}

    def section(field: str) -> int:
        head = field.split(".", 1)[0]
        return _SECTION_ORDER.index(head) if head in _SECTION_ORDER else len(_SECTION_ORDER)

    return dict(sorted(kept.items(), key=lambda item: section(item[0])))


def _nested_errors(tree: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The errors of the lazily validated sections: ``({field: message}, [messages naming no single field])``."""
    fields: dict[str, str] = {}
    loose: list[str] = []
    model = tree.get("model")
    if isinstance(model, dict):
        tasks = model.get("tasks")
        for name, options in (tasks.items() if isinstance(tasks, dict) else ()):
            try:
                entry = TASKS.entry(name)
            except ValueError as e:  # an unknown task
                fields[f"model.tasks.{name}"] = str(e)
                continue
            try:
                entry.options.model_validate(options or {})
            except ValidationError as e:
                fields.update(field_messages(e, f"model.tasks.{name}"))
        try:
            ModelConfig.model_validate(resolve_model_dict(model))
        except ValidationError as e:
            fields.update({f: m for f, m in field_messages(e, "model").items() if f not in fields})
        except ConfigError as e:  # from resolve_model_dict: its fields are relative to the model section
            fields.update({f"model.{field}": message for field, message in e.fields.items()})
            if not e.fields:
                loose.append(f"model.{e}")
        except ValueError as e:
            loose.append(f"model.{e}")
        except ImportError:
            pass
    data = tree.get("data")
    datasets = data.get("datasets") if isinstance(data, dict) else None
    items = list(datasets.items()) if isinstance(datasets, dict) else []
    ev = data.get("eval") if isinstance(data, dict) else None
    if isinstance(ev, dict):
        items.append(("eval", ev))
    for name, ds in items:
        if isinstance(ds, dict) and ds.get("kind") == "world" and isinstance(ds.get("world"), dict) and ds["world"]:
            try:
                WorldConfig.model_validate(ds["world"])
            except ValidationError as e:
                fields.update(field_messages(e, "data.eval.world" if name == "eval" else f"data.datasets.{name}.world"))
            except ImportError:
                pass
    return fields, loose


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides, validate. Raises ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    tree = read_yaml_mapping(path, ConfigError, "a mapping of config sections (data, model, train)")
    return config_with_overrides(tree, overrides or [], str(path))


def config_with_overrides(tree: dict[str, Any], overrides: list[str], where: str) -> Config:
    """``config_from_dict`` of ``tree`` with ``--set`` ``overrides`` applied. A field the command line set
    is named as the user typed it (``--set train.lr=abc: train.lr: ...``), any other by ``where``; a field in a
    section the command line created (``--set data.datasets.extra.frames=3``: the file has no ``extra``) is the
    command line's too."""
    written = {_key(item): item for item in overrides}  # the last --set of a key wins, as overrides apply in order
    created = _sections_created(tree, overrides)  # before apply_overrides changes the tree in place
    try:
        return config_from_dict(apply_overrides(tree, overrides), where)
    except ConfigError as e:
        def set_by(field: str) -> str | None:
            """The ``--set`` item that wrote ``field``, a section holding it, or created the section it lies in
            (the most specific of them)."""
            matches = [(len(prefix), k < len(written), item) for k, (prefix, item)
                       in enumerate([*written.items(), *created.items()])
                       if field == prefix or field.startswith(prefix + ".")]
            return max(matches)[2] if matches else None

        if not any(set_by(field) for field in e.fields):
            raise
        named = [f"--set {item}: {field}: {message}" if (item := set_by(field)) else f"{where}: {field}: {message}"
                 for field, message in e.fields.items()]
        raise ConfigError("\n".join([*e.general, *named]), e.fields, e.general) from None


def _key(item: str) -> str:
    """The dotted key of a ``--set KEY=VALUE`` item."""
    return item.split("=", 1)[0].strip()


def _sections_created(tree: dict[str, Any], overrides: list[str]) -> dict[str, str]:
    """``{section path: --set item}`` for each section an override creates (absent from ``tree``)."""
    created: dict[str, str] = {}
    for item in overrides:
        path = [p for p in _key(item).split(".") if p]
        node: Any = tree
        for k, part in enumerate(path[:-1]):
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                created.setdefault(".".join(path[:k + 1]), item)
                break
            node = node[part]
    return created


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a JSON-ready dict (what checkpoints record and ``config_from_dict`` reads back)."""
    return cfg.model_dump(mode="json")


def _world_sections(tree: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(field of its world, section)`` of each world dataset of a ``config_to_dict`` tree (the training
    datasets, then ``eval``)."""
    sections = [(f"data.datasets.{name}.world", section) for name, section in tree["data"]["datasets"].items()]
    sections.append(("data.eval.world", tree["data"].get("eval")))
    return [(field, section) for field, section in sections
            if isinstance(section, dict) and section.get("kind") == "world"]


def with_worlds_inline(cfg: Config) -> Config:
    """``cfg`` with every world dataset's ``world`` that names a world YAML replaced by the fields that file sets,
    read now (those it leaves out stay open: a world without a ``setup`` still renders the model's; inline worlds
    are kept as written). A run trains and records this config (its ``config.yaml`` and
    checkpoints), so the record reads the same from any working directory and after the file is edited.
    ``ConfigError`` naming the field and the file when it cannot be read."""
    tree = config_to_dict(cfg)
    files = [(field, section) for field, section in _world_sections(tree) if isinstance(section.get("world"), str)]
    for field, section in files:
        try:
            section["world"] = load_world_config(section["world"]).model_dump(mode="json", exclude_unset=True)
        except ValueError as e:
            path = Path(section["world"]).expanduser()
            where = (f" (a relative world path is read from the working directory, {Path.cwd()}, not from the "
                     "config's folder)") if not path.is_absolute() and not path.exists() else ""
            raise ConfigError(f"{field}: {e}{where}") from None
    return config_from_dict(tree, "the config") if files else cfg


def resolved_config_dict(cfg: Config) -> dict[str, Any]:
    """``config_to_dict(cfg)`` with the sections a config keeps as written resolved to what they mean: the model
    (its preset merged in, ``resolved_model``) with each task's options, and each world dataset's ``world`` (inline
    fields, or the world YAML a path names, read now: ``ValueError`` naming a file that cannot be read), with every
    default filled in. Two configs that train the same thing give equal dicts, however much of their defaults each
    spells out and wherever their world is written (``train --resume`` compares a run's config so)."""
    tree = config_to_dict(cfg)
    model = cfg.resolved_model().model_dump(mode="json")
    model["tasks"] = {name: TASKS.validate(name, options, f"model.tasks.{name}").model_dump(mode="json")
                      for name, options in model["tasks"].items()}
    tree["model"] = model
    for _, section in _world_sections(tree):
        section["world"] = load_world_config(section.get("world") or None).model_dump(mode="json")
    return tree
