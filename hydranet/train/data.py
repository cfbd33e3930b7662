"""Build the training and evaluation datasets a config's ``data`` section describes, for a model's ``Setup``.

Every dataset is opened with the model's setup flowing in (``source_config``) and reports its
own setup; ``resolve_setup`` gives the model the rigs of its data (those the config does not declare) and
checks every dataset against the model (``ModelConfig.check_data``, the one check). The training set is
the concatenation of ``data.datasets`` (in name order); each task's index
list is the samples of *its* datasets (``data.tasks.<task>.datasets``, default all) that carry its
label, optionally capped by ``max_samples``. Label presence comes from metadata where the source
has it (the synthetic world's deterministic drop pattern, the shard members' names), so no image is
decoded to build the lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from hydranet.data import Sample
from hydranet.data import open_source as open_registered
from hydranet.datasets import dataset_setup, source_config
from hydranet.model import ModelConfig
from hydranet.setup import Setup
from hydranet.train.config import Config, ConfigError, DataConfig, DatasetConfig, load_config
from hydranet.train.scheduler import build_index_lists, label_presence
from hydranet.world import WorldConfig, load_world_config
from hydranet.yaml_files import read_yaml_mapping


def world_config(cfg: Config, dataset: str | None = None, overrides: dict[str, Any] | None = None) -> WorldConfig:
    """The ``WorldConfig`` of ``cfg``'s world dataset ``dataset`` (``data.datasets.<name>`` or ``eval``; None: the
    only training world dataset), rendering the model's setup unless it declares its own (``source_config``).
    ``ValueError`` names the world datasets to choose from."""
    sources = {**cfg.data.datasets, **({"eval": cfg.data.eval} if cfg.data.eval is not None else {})}
    worlds = {n: d for n, d in sources.items() if d.kind == "world"}
    if dataset is None:
        train = sorted(n for n in worlds if n in cfg.data.datasets)
        if len(train) != 1:
            raise ValueError(f"a training config with world datasets {sorted(worlds)}: choose one with "
                             "--dataset NAME")
        dataset = train[0]
    if dataset not in worlds:
        raise ValueError(f"no world dataset '{dataset}' (world datasets: {sorted(worlds)})")
    return load_world_config(source_config(worlds[dataset].options(), cfg.resolved_model().setup)["world"],
                             overrides)


def world_from_file(path: str | Path | None, dataset: str | None = None,
                    overrides: dict[str, Any] | None = None) -> tuple[WorldConfig, Config | None]:
    """The world a YAML file describes and, for a training config, the config: a training config's world
    dataset ``dataset`` renders its model's setup (``world_config``); any other file is a world config
    (``load_world_config``; None = the defaults). ``ValueError`` (``ConfigError``) names the file and field."""
    if path is not None and Path(path).suffix in (".yaml", ".yml") and Path(path).is_file():
        tree = read_yaml_mapping(Path(path), ConfigError, "a YAML mapping", empty={})
        if isinstance(tree.get("data"), dict):
            cfg = load_config(path)
            try:
                return world_config(cfg, dataset, overrides), cfg
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
    return load_world_config(path, overrides), None


def open_source(ds: DatasetConfig, labels: list[str] | None = None, where: str = "data",
                setup: Setup | None = None) -> Dataset:
    """One configured source as a map-style dataset of ``Sample`` (limited to ``frames``), opened for the model
    ``setup`` (its section completed by ``source_config``; None: the section as written, opened for the defaults).
    ``labels``: the labels training reads (shards then decode only those)."""

    config = source_config(ds.options(), setup) if setup is not None else ds.options()
    if ds.kind == "shards" and labels is not None and "labels" not in config:
        config["labels"] = labels
    data: Dataset = open_registered(config, where, setup=setup)
    if ds.frames is not None and ds.frames < len(data):  # type: ignore[arg-type]
        data = Subset(data, range(ds.frames))
    return data


@dataclass
class TrainData:
    """What ``build_train_data`` returns: the training set (sources concatenated in name order), each task's
    sample indices into it (int64), the eval set (or None), samples per source, and the rig groups."""

    dataset: Dataset
    index_lists: dict[str, np.ndarray]
    eval_dataset: Dataset | None
    sizes: dict[str, int]  # dataset name -> samples
    # Rig group (dataset name) of every sample when the datasets' rigs differ (None: one rig, batches
    # may mix datasets); ``rigs`` describes each dataset's rig: cameras x H x W.
    groups: np.ndarray | None = None
    rigs: dict[str, str] | None = None
    # What every dataset reports (``Source.setup``): "data.datasets.<name>" / "data.eval" -> its Setup.
    setups: dict[str, Setup] | None = None


def undeclared_rigs(model_cfg: ModelConfig, resolved: ModelConfig) -> list[str]:
    """One line per rig ``resolve_setup`` took from the data beside rigs the config declares (``setup.rigs`` set):
    what a user who declared their rig should hear, as data whose camera names differ from it is trained as a rig
    of its own and not as the declared one. A config that declares no rig and trains on data of several rigs gets
    one line naming them (their names come from the data). Empty otherwise."""
    if "rigs" not in model_cfg.setup.model_fields_set:
        rigs = resolved.setup.rigs
        if len(rigs) < 2:  # one rig, the data's own: nothing a user would not expect
            return []
        # Several rigs taken from the data, named by the data (a rig name that clashes takes its dataset's name).
        return [f"the model takes the {len(rigs)} rigs of its data: "
                + "; ".join(f"'{r.name}' (cameras {list(r.names)})" for r in rigs)
                + " (`hydranet export --rig NAME` exports one; declare model.setup.rigs to name them yourself)"]
    declared = {r.name: list(r.names) for r in model_cfg.setup.rigs}
    return [f"rig '{r.name}' (cameras {list(r.names)}) of the data is not among the rigs model.setup.rigs declares "
            f"({', '.join(f'{n}: {c}' for n, c in declared.items())}): the model takes it as a further rig "
            f"(`hydranet export --rig {r.name}`); declare it, or name its cameras as the declared rig's if it is one"
            for r in resolved.setup.rigs[len(model_cfg.setup.rigs):]]


def resolve_setup(model_cfg: ModelConfig, setups: dict[str, Setup]) -> ModelConfig:
    """``model_cfg`` with the rigs of its data, checked: the rigs the config declares (``setup.rigs``; none
    declared: none) followed by every dataset's rig with other cameras, under the rig's own name (the
    dataset's on a clash); then every dataset is checked against the model (``ModelConfig.check_data``:
    image size, rig, grid, classes), raising ``SetupMismatchError`` naming the dataset."""
    setup = model_cfg.setup
    rigs = list(setup.rigs) if "rigs" in setup.model_fields_set else []
    for where, data in setups.items():
        for rig in data.rigs:
            if not any(r.names == rig.names for r in rigs):
                clash = rig.name in [r.name for r in rigs]
                rigs.append(rig.model_copy(update={"name": where.rsplit(".", 1)[-1]}) if clash else rig)
    resolved = model_cfg.model_copy(update={"setup": setup.model_copy(update={"rigs": tuple(rigs) or setup.rigs})})
    for where, data in setups.items():
        resolved.check_data(data, where)
    return resolved


def build_train_data(cfg: DataConfig, task_labels: dict[str, str], seed: int = 0,
                     setup: Setup | None = None) -> TrainData:
    """``task_labels``: task name -> the Sample label it learns from; ``setup``: the model's, flowing into the
    datasets as they open (``source_config``)."""
    for task in cfg.tasks:
        if task not in task_labels:
            raise ValueError(f"data.tasks.{task}: not a task of this model (tasks: {sorted(task_labels)})")
    labels = sorted(set(task_labels.values()))
    names = sorted(cfg.datasets)
    parts = [open_source(cfg.datasets[n], labels, f"data.datasets.{n}", setup) for n in names]
    sizes = {n: len(p) for n, p in zip(names, parts, strict=True)}  # type: ignore[arg-type]
    full = ConcatDataset(parts)
    pres = label_presence(full, labels)
    offsets = np.cumsum([0, *sizes.values()])
    allowed: dict[str, np.ndarray | None] = {}
    for task in task_labels:
        chosen = cfg.tasks[task].datasets if task in cfg.tasks else None
        if chosen is None:
            allowed[task] = None
            continue
        mask = np.zeros(len(full), dtype=bool)
        for n in chosen:
            k = names.index(n)
            mask[offsets[k]:offsets[k + 1]] = True
        allowed[task] = mask
    caps = {t: tc.max_samples for t, tc in cfg.tasks.items()}
    index_lists = build_index_lists(pres, task_labels, allowed, caps, seed)
    empty = sorted(t for t, v in index_lists.items() if len(v) == 0)
    if empty:
        raise ValueError(f"no training samples carry the labels of task(s) {empty} (datasets: {sizes}); "
                         "check data.datasets, data.tasks and the world's drop_labels")
    eval_ds = open_source(cfg.eval, labels, "data.eval", setup) if cfg.eval is not None else None
    setups = {f"data.datasets.{n}": dataset_setup(p) for n, p in zip(names, parts, strict=True)}
    if eval_ds is not None:
        setups["data.eval"] = dataset_setup(eval_ds)
    rigs = {n: (setups[f"data.datasets.{n}"].rig().names, setups[f"data.datasets.{n}"].image_size) for n in names}
    groups = None
    if len(set(rigs.values())) > 1:
        groups = np.concatenate([np.full(sizes[n], n, dtype=object) for n in names])
    return TrainData(full if len(parts) > 1 else parts[0], index_lists, eval_ds, sizes, groups,
                     {n: f"{len(r[0])} cameras {r[1][0]}x{r[1][1]}" for n, r in rigs.items()}, setups)


class InMemoryDataset(Dataset):
    """Every sample of ``dataset`` decoded once and held in RAM (``train.in_memory``); ``__getitem__`` returns
    the stored ``Sample`` (its tensors are shared, never modified by training: collate stacks copies)."""

    def __init__(self, dataset: Dataset, progress: Callable[[int, int], None] | None = None) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        self.samples = []
        for i in range(n):
            self.samples.append(dataset[i])
            if progress is not None:
                progress(i + 1, n)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]
