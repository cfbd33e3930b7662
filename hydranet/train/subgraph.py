"""Sub-graph training: fine-tune or add heads on a trained network without touching anyone else's outputs.

``hydranet train --from CKPT --tasks lanes --freeze trunk,neck`` (``run.run_training``) already trains
only the named heads on images. This module adds what needs more than that:

- ``--from-cache CACHE``: train heads on cached trunk features (``feature_cache.py``) through
  ``model.forward_features``; the trunk never runs, which is where the speed comes from. The
  model's trunk hash must equal the cache's, or training is refused.
- ``--add-task NAME``: put a new task into the trained network (its head starts fresh) and train only
  that head; trunk, neck and fusion are frozen unless ``--freeze`` names another set.

Why frozen shared modules keep the other heads bit-identical: their parameters get no gradient (so
the optimizer never touches them, weight decay included), they run in eval mode (BatchNorm statistics do not
move), and the other heads are frozen the same way and not even run. ``run.shared_note`` warns when a
shared module a *non-trained* head reads still trains, since that head's outputs will then change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hydranet.checkpoint import CheckpointError, load_checkpoint, trunk_hash
from hydranet.console import make_console
from hydranet.json_files import dumps
from hydranet.model import create_model
from hydranet.setup import SetupMismatchError
from hydranet.tasks import create_task
from hydranet.train.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_with_overrides,
    load_config,
    resolve_model_dict,
    with_worlds_inline,
)
from hydranet.train.data import open_source
from hydranet.train.feature_cache import CachedBatch, CachedFeatureDataset, FeatureCache, collate_cached
from hydranet.train.feature_cache_format import CacheError
from hydranet.train.interrupt import workers_ignore_stop_signals
from hydranet.train.run import (
    finish_already_finished,
    fit_stoppable,
    resume_command,
    run_training,
    shared_note,
    training_session,
    write_run_config,
)
from hydranet.train.scheduler import SchedulerBatchSampler, build_index_lists
from hydranet.train.trainer import Trainer

_SHARED = ("trunk", "neck", "fusion")


# ---------------------------------------------------------------------------------------------
# configs and weights
# ---------------------------------------------------------------------------------------------


def load_train_config(config: str | Path | None, overrides: list[str], from_ckpt: str | Path | None) -> Config:
    """The config file when given; otherwise the ``--from`` checkpoint's own config (``--set`` applies to both)."""
    if config is not None:
        return load_config(config, overrides)
    if from_ckpt is None:
        raise ConfigError("--config is required unless --from names a checkpoint (whose config is then used)")

    ckpt = load_checkpoint(from_ckpt)
    where = f"{ckpt.name if ckpt.name != str(ckpt.path) else ckpt.path / 'state.json'} (config)"  # zoo:NAME as typed
    tree = json.loads(json.dumps(ckpt.state.get("config") or {}))
    if ckpt.state.get("model_config"):  # the resolved model is authoritative (tasks added by earlier runs)
        tree["model"] = ckpt.state["model_config"]
    return config_with_overrides(tree, overrides, where)


def _add_tasks_to_config(cfg: Config, names: list[str], resume: bool = False) -> Config:
    """``cfg`` with new tasks (default options) appended to ``model.tasks``; existing ones are an error, except
    when resuming: a run's own config.yaml records the tasks it added (the start command repeated with
    --resume names them again)."""
    tree = config_to_dict(cfg)
    tasks = dict(resolve_model_dict(tree["model"]).get("tasks") or {})
    for name in names:
        if name in tasks and resume:
            continue
        if name in tasks:
            raise ValueError(f"--add-task {name}: the network already has this task; use --tasks {name} to "
                             "fine-tune its head")

        try:
            create_task(name)  # unknown names fail here, listing the registered tasks
        except KeyError as e:
            raise ValueError(f"--add-task {name}: {str(e).strip(chr(39))}") from None
        tasks[name] = {}
    tree["model"] = {**tree["model"], "tasks": tasks}
    return config_from_dict(tree, "<config + --add-task>")


def load_base_weights(model: nn.Module, path: str | Path, new_heads: list[str]) -> str:
    """Load a checkpoint into ``model``: everything but the heads of ``new_heads`` must be in it.
    Returns a one-line note for the console naming the heads that start fresh (those of ``new_heads`` the
    checkpoint lacks). Raises ``CheckpointError`` naming the missing or misshapen tensors."""
    ckpt = load_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.model))
    bad = [k for k in missing if not any(k.startswith(f"heads.{t}.") for t in new_heads)]
    fresh = [t for t in new_heads if any(k.startswith(f"heads.{t}.") for k in missing)]
    if bad:
        raise CheckpointError(f"{ckpt.name}: lacks {bad[:4]}{' …' if len(bad) > 4 else ''}: only the heads of new "
                              f"tasks ({new_heads or 'none'}) may be missing; is --config the checkpoint's model?")
    for k, v in ckpt.model.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{ckpt.name}: tensor {k} is {tuple(v.shape)}, the model's {tuple(own[k].shape)}")
    model.load_state_dict({k: v for k, v in ckpt.model.items() if k in own}, strict=False)
    dropped = sorted({k.split(".")[1] for k in set(ckpt.model) - set(own) if k.startswith("heads.")})
    return (f"initialised from {ckpt.name} (step {ckpt.state.get('step')})"
            + (f"; new heads: {fresh}" if fresh else "") + (f"; dropped heads {dropped}" if dropped else ""))


# ---------------------------------------------------------------------------------------------
# training from the cache
# ---------------------------------------------------------------------------------------------


class CacheTrainer(Trainer):
    """The ``Trainer`` on cached features: batches are ``CachedBatch``; eval batches (real frames) still
    go through the whole model, so metrics are measured exactly as for any checkpoint."""

    def forward(self, batch: Any, tasks: list[str]) -> dict[str, dict[str, Tensor]]:
        """``{task: {key: Tensor}}``: a ``CachedBatch`` runs ``forward_features`` on its cached (fp16-stored,
        fp32-computed) trunk features; any other batch goes through the whole model (``Trainer.forward``)."""
        if isinstance(batch, CachedBatch):
            feats = {k: v.float() for k, v in batch.features.items()}  # fp16 storage, fp32 (or autocast) compute
            return self.model.forward_features(feats, batch.intrinsics, batch.T_ego_from_cam, tasks,
                                                    image_hw=tuple(batch.images.shape[-2:]))
        return super().forward(batch, tasks)

    def train_mode(self) -> None:
        """``Trainer.train_mode``'s modes (trained parts train, frozen parts eval), re-applied only when changed."""
        # The modes Trainer.train_mode sets (trained parts train, frozen parts eval), but re-applied only
        # when something changed them (the eval hook): on a head-only step the module walk costs ~10%.
        modes = getattr(self, "_modes", None)
        if modes is None or any(m.training != mode for m, mode in modes):
            super().train_mode()
            self._modes = [(m, m.training) for m in self.model.modules()]

    def _loader(self) -> Iterator[CachedBatch]:
        total = self.tc.steps * self.tc.grad_accum
        sampler = SchedulerBatchSampler(self.scheduler, self.tc.batch_size, self.dist.rank, self.dist.world_size, total)
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + self.scheduler.micro_step)
        return iter(DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_cached,
                               num_workers=self.tc.num_workers, generator=gen, pin_memory=self.device.type == "cuda",
                               prefetch_factor=2 if self.tc.num_workers else None,
                               worker_init_fn=workers_ignore_stop_signals))  # Ctrl-C stops the trainer


def needed_levels(model: nn.Module, tasks: list[str]) -> list[str] | None:
    """FPN levels the heads of ``tasks`` (and fusion, for BEV tasks) read; ``None`` when a head does not
    say (a custom head without ``levels``): then every level is read. Reading only these is most of
    the I/O saving for a head on a coarse level (p2 is ~3/4 of the cached bytes)."""
    levels: set[str] = set()
    for t in tasks:
        if model.task_objects[t].space == "bev":
            levels |= set(getattr(model.fusion, "levels", None) or [])
        else:
            head_levels = getattr(model.heads[t], "levels", None)
            if not head_levels:
                return None
            levels |= set(head_levels)
    return sorted(levels) or None


def _check_cache(model: nn.Module, cache: FeatureCache, train_tasks: list[str]) -> None:
    """Refuse a cache that cannot train these heads: another trunk, a data setup the model cannot learn from
    (``ModelConfig.check_data`` of the setup the cache recorded, for the trained heads' labels: image size, rigs,
    classes, and the BEV grid of their maps), or missing labels."""
    cache.check_trunk(trunk_hash(model), "the --from checkpoint")
    try:
        model.cfg.check_data(cache.setup, f"{cache.path} (the cached data)", "the --from checkpoint",
                             labels={model.task_objects[t].label for t in train_tasks},
                             remedy="train those heads from images (without --from-cache)")
    except SetupMismatchError as e:
        raise CacheError(str(e)) from None
    missing = {t: model.task_objects[t].label for t in train_tasks if model.task_objects[t].label not in cache.labels}
    if missing:
        raise CacheError(f"{cache.path}: does not store the label(s) {sorted(set(missing.values()))} that task(s) "
                         f"{sorted(missing)} learn from (stored: {cache.labels}); rebuild it with "
                         f"`hydranet cache-features --labels ...`")
    probe = collate_cached([cache.read(0, [], needed_levels(model, train_tasks))])
    was_training = model.training
    model.eval()  # a train-mode probe would move BatchNorm statistics, even under no_grad
    try:
        with torch.no_grad():
            model.forward_features({k: v.float() for k, v in probe.features.items()}, probe.intrinsics,
                                        probe.T_ego_from_cam, train_tasks, image_hw=cache.image_hw)
    except KeyError as e:
        raise CacheError(f"{cache.path}: the heads of {train_tasks} read FPN level {e} which the cache does not store "
                         f"(cached: {sorted(cache.levels)})") from None
    finally:
        model.train(was_training)


def run_subgraph(cfg: Config, out_dir: str | Path, *, from_ckpt: str | Path | None, tasks: list[str] | None = None,
                 add_tasks: list[str] | None = None, freeze: list[str] | None = None,
                 cache: str | Path | None = None, resume: bool = False, progress: bool = True,
                 console: Any = None, resume_hint: str | None = None) -> dict[str, Any]:
    """``hydranet train --from CKPT [--add-task NAME]... [--tasks ...] [--from-cache CACHE]``.

    Without a cache this hands over to ``run.run_training`` (images through the frozen trunk); with
    one, heads train on the cached features. Either way only the trained heads' tensors change.
    """
    console = console or make_console(stderr=True)
    add_tasks = list(dict.fromkeys(add_tasks or []))
    if from_ckpt is None:
        raise ValueError("sub-graph training (--add-task / --from-cache) needs --from CKPT: the trained network")
    if add_tasks:
        cfg = _add_tasks_to_config(cfg, add_tasks, resume)
    train_tasks = sorted(set(tasks or []) | set(add_tasks))
    if not train_tasks:
        raise ValueError("name the heads to train: --tasks a,b and/or --add-task NAME")
    freeze = list(freeze) if freeze else list(_SHARED)
    if cache is None:
        return run_training(cfg, out_dir, resume=resume, from_ckpt=str(from_ckpt), tasks=train_tasks, freeze=freeze,
                            progress=progress, console=console, resume_hint=resume_hint)
    return _run_cached(cfg, Path(out_dir), Path(from_ckpt), FeatureCache(cache), train_tasks, add_tasks,
                       sorted(set(freeze) | {"trunk", "neck"}), resume, progress, console, resume_hint)


def _run_cached(cfg: Config, out_dir: Path, from_ckpt: Path, cache: FeatureCache, train_tasks: list[str],
                add_tasks: list[str], freeze: list[str], resume: bool, progress: bool,
                console: Any, resume_hint: str | None = None) -> dict[str, Any]:
    cfg = with_worlds_inline(cfg)  # as run_training: the run's record reads the same from any directory
    tc = cfg.train
    if tc.clip is not None:
        raise CacheError("train.clip (video clips) cannot train from a feature cache: the cache holds single "
                         "frames; drop --cache or train.clip")
    with training_session(cfg, out_dir, resume) as (device, info):
        torch.manual_seed(tc.seed)
        model_cfg = cfg.resolved_model()
        model = create_model(model_cfg)
        # A resumed run's own checkpoint replaces every trained head: the heads it added (its config.yaml has
        # them; --from's checkpoint does not) may be missing from --from like those --add-task names.
        note = load_base_weights(model, from_ckpt, train_tasks if resume else add_tasks)
        unknown = sorted(set(train_tasks) - set(model.task_objects))
        if unknown:
            raise ValueError(f"--tasks {unknown}: not tasks of the model (model tasks: {sorted(model.task_objects)})")
        _check_cache(model, cache, train_tasks)
        labels = {t: model.task_objects[t].label for t in train_tasks}
        data = CachedFeatureDataset(cache, sorted(set(labels.values())), needed_levels(model, train_tasks))
        caps = {t: c.max_samples for t, c in cfg.data.tasks.items()}
        index_lists = build_index_lists(data.label_presence(sorted(set(labels.values()))), labels, {}, caps, tc.seed)
        empty = [t for t, v in index_lists.items() if len(v) == 0]
        if empty:
            raise CacheError(f"{cache.path}: no cached frame carries the labels of task(s) {empty}")
        eval_set = open_source(cfg.data.eval) if tc.eval_every and cfg.data.eval is not None else None
        if not resume:  # a resumed run's once its checkpoint loaded (below)
            write_run_config(cfg, out_dir, info)
        torch.manual_seed(tc.seed + 7919 * info.rank)
        trainer = CacheTrainer(cfg, model, data, out_dir, tasks=model.task_objects, train_tasks=train_tasks,
                               index_lists=index_lists, eval_set=eval_set, frozen=freeze,
                               model_config=model_cfg.model_dump(mode="json"), dist_info=info, device=device,
                               progress=progress)
        resumed = trainer.resume() if resume else False
        if resumed and trainer.step >= tc.steps:  # finished: write nothing, say so in one line
            return finish_already_finished(trainer, info, console)
        if resume:  # after the resume: a refused one leaves config.yaml as it was
            write_run_config(cfg, out_dir, info)
        if info.is_main:
            if trainer.resume_note:
                console.print(f"  [yellow]{trainer.resume_note}")
            if resumed:
                console.print(f"  resumed at step {trainer.step}")
            sizes = {t: int(len(v)) for t, v in index_lists.items()}
            console.print(f"[bold]hydranet train[/] (from feature cache {cache.path}, {len(cache)} frames, "
                          f"trunk {cache.trunk_hash[:12]}) -> {out_dir}  device={device}")
            start = "" if resumed else f"{note}; "  # a resumed run's weights are its checkpoint's, not --from's
            console.print(f"  {start}training heads {train_tasks} on {sizes} cached frames; "
                          f"frozen (no grad, eval mode): {trainer.frozen}")
            warn = shared_note(model, train_tasks, trainer.frozen)
            if warn:
                console.print(f"  [yellow]note:[/] {warn}")
        resume_cmd = resume_command(f"train --resume -o {out_dir} --from {from_ckpt} --from-cache {cache.path}"
                                    + (f" --tasks {','.join(train_tasks)}" if train_tasks else ""), info)
        summary = fit_stoppable(trainer, resume_hint or resume_cmd, console if info.is_main else None)
        summary["cache"] = str(cache.path)
        if info.is_main:
            (out_dir / "train_summary.json").write_text(dumps(summary))
            console.print(f"final checkpoint: {summary['checkpoint']} (step {summary['steps']})", soft_wrap=True)
    return summary


def changed_tensors(before: dict[str, Tensor], after: dict[str, Tensor]) -> list[str]:
    """State-dict names whose tensors differ (``torch.equal``): what a sub-graph run actually touched."""
    return sorted(k for k in before if k not in after or not torch.equal(before[k], after[k]))
