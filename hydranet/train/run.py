"""``run_training``: config -> process group -> data -> model -> Trainer -> checkpoint.

This is what ``hydranet train`` (and ``torchrun ... -m hydranet train``) executes, and what the
demo calls. Options for sub-graph training live here too:

- ``from_ckpt``: start from a trained checkpoint's weights. The model is built from the config, so
  the config may add tasks; every checkpoint tensor must fit, and only heads of new tasks may be
  missing from it.
- ``tasks``: train only these heads (the others are frozen and not run).
- ``freeze``: also freeze shared modules (``trunk``, ``neck``, ``fusion``): ``requires_grad=False``
  and eval mode, so BatchNorm statistics do not move and the other heads' outputs stay bit-identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from hydranet.checkpoint import CheckpointError, load_checkpoint, read_state
from hydranet.config_errors import setting_differences
from hydranet.console import make_console, progress
from hydranet.json_files import dumps
from hydranet.model import create_model
from hydranet.outputs import hold_lock
from hydranet.setup import Setup
from hydranet.tasks import TASKS
from hydranet.train import distributed
from hydranet.train.clips import ClipTrainer
from hydranet.train.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    resolved_config_dict,
    with_worlds_inline,
)
from hydranet.train.data import InMemoryDataset, TrainData, build_train_data, resolve_setup, undeclared_rigs
from hydranet.train.interrupt import EXIT_CODES, TrainingInterrupted, received_signal, stop_on_signals
from hydranet.train.trainer import Trainer
from hydranet.yaml_files import read_yaml_mapping


def _load_from(model: torch.nn.Module, ckpt_path: str | Path) -> str:
    ckpt = load_checkpoint(ckpt_path)
    trained_cfg = ckpt.state.get("model_config")
    if isinstance(trained_cfg, dict) and hasattr(model, "cfg"):  # the BEV cells its weights were trained for
        trained, grid = Setup.model_validate(trained_cfg.get("setup") or {}).grid, model.cfg.setup.grid
        if trained is not None and grid is not None and trained != grid:
            raise CheckpointError(f"{ckpt.name}: trained on the BEV grid {trained.describe()}, the config's model has "
                                  f"{grid.describe()}: its BEV weights would be applied to other cells; use the "
                                  "checkpoint's grid (model.setup.grid) or train from scratch")
    own = model.state_dict()
    unexpected = sorted(set(ckpt.model) - set(own))
    missing = sorted(set(own) - set(ckpt.model))
    bad_missing = [k for k in missing if not k.startswith("heads.")]
    if bad_missing:
        raise CheckpointError(f"{ckpt.name}: the config's model needs {bad_missing[:5]} which the checkpoint lacks "
                              "(only heads of new tasks may be missing)")
    for k, v in ckpt.model.items():
        if k in own and own[k].dtype != v.dtype:
            raise CheckpointError(f"{ckpt.name}: tensor {k} is {v.dtype}, the model's is {own[k].dtype}: the "
                                  "checkpoint was altered or is not this model's")
        if k in own and own[k].shape != v.shape:
            diff = setting_differences(model.cfg.model_dump(mode="json"), trained_cfg,
                                       names=("the checkpoint", "the config")) if (
                isinstance(trained_cfg, dict) and hasattr(model, "cfg")) else []
            where = ("; the model settings that differ: " + "; ".join(diff)) if diff else (
                ": is the model section the checkpoint's?")
            raise CheckpointError(f"{ckpt.name}: tensor {k} has shape {tuple(v.shape)}, the config's model "
                                  f"{tuple(own[k].shape)}{where}")
    model.load_state_dict({k: v for k, v in ckpt.model.items() if k in own}, strict=False)
    dropped = f"; dropped {len(unexpected)} tensors of tasks not in the config" if unexpected else ""
    new = sorted({k.split(".")[1] for k in missing})
    return f"initialised from {ckpt.name} (step {ckpt.state.get('step')}){dropped}" + (
        f"; new heads: {new}" if new else "")


def _resumed_selection(out_dir: Path, tasks: list[str] | None, freeze: list[str] | None,
                      all_tasks: list[str]) -> tuple[list[str] | None, list[str] | None]:
    """The trained tasks and frozen shared modules a resumed run in ``out_dir`` keeps: its newest checkpoint's own
    (``state.json``'s ``train_tasks`` and ``frozen``), so ``--resume`` alone continues a ``--tasks``/``--freeze``
    run. ``tasks``/``freeze`` as given (None or empty: not given) must equal them: ``ValueError`` naming both.
    A run without a checkpoint yet returns them unchanged."""
    # Only the newest checkpoint's state.json: the trainer's resume loads and verifies the checkpoint itself.
    try:
        state = read_state(out_dir)
    except CheckpointError:
        return tasks, freeze  # no checkpoint to read (or a corrupt newest one): resume itself says which
    trained = sorted(state.get("train_tasks") or all_tasks)
    frozen = sorted(m for m in state.get("frozen") or [] if not m.startswith("heads."))
    if tasks and sorted(tasks) != trained:
        raise ValueError(f"--tasks {sorted(tasks)}: the run in {out_dir} trains {trained}; resume with those (or "
                         "without --tasks: the run keeps its own)")
    if freeze and sorted(freeze) != frozen:
        raise ValueError(f"--freeze {sorted(freeze)}: the run in {out_dir} freezes {frozen or 'nothing'}; resume with "
                         "that (or without --freeze: the run keeps its own)")
    return (trained if trained != sorted(all_tasks) else tasks), (frozen or freeze)


def run_training(cfg: Config, out_dir: str | Path, *, resume: bool = False, from_ckpt: str | None = None,
                 tasks: list[str] | None = None, freeze: list[str] | None = None, progress: bool = True,
                 console: Any = None, resume_hint: str | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``out_dir``; returns the trainer's summary (rank 0 writes files).

    ``resume_hint``: the command an interrupted run tells the user to resume with (default: ``hydranet train
    --resume -o OUT``, under torchrun when the job has several ranks; the vacation names its own command).

    ``from_ckpt`` initialises the weights (only heads of new tasks may be missing, else ``CheckpointError``);
    ``tasks`` restricts the trained tasks (unknown names: ``ValueError``); ``freeze`` names modules to freeze; a
    resumed run keeps the tasks and frozen modules it was started with (``_resumed_selection``);
    ``train.clip`` selects ``ClipTrainer``. ``RunLockedError`` when another process trains into ``out_dir``."""

    console = console or make_console(stderr=True)
    cfg = with_worlds_inline(cfg)  # what the run records reads the same from any directory
    tc = cfg.train
    out_dir = Path(out_dir)
    model_cfg = cfg.resolved_model()
    labels = {name: TASKS[name].label for name in model_cfg.tasks}
    if resume:
        tasks, freeze = _resumed_selection(out_dir, tasks, freeze, sorted(labels))
    train_tasks = sorted(tasks) if tasks else sorted(labels)
    unknown = sorted(set(train_tasks) - set(labels))
    if unknown:  # before the run directory exists: a typo leaves nothing behind
        raise ValueError(f"--tasks {unknown}: not tasks of the model (model tasks: {sorted(labels)})")
    with training_session(cfg, out_dir, resume) as (device, info):
        # Every dataset opens for the model's setup and reports its own: the model gets their rigs and the
        # one check refuses a mismatch (image size, rig, grid, classes) before a frame is rendered.
        data = build_train_data(cfg.data, {t: labels[t] for t in train_tasks}, tc.seed, model_cfg.setup)
        declared, model_cfg = model_cfg, resolve_setup(model_cfg, data.setups or {})
        if info.is_main:
            for line in undeclared_rigs(declared, model_cfg):
                console.print(f"note: {line}", soft_wrap=True)
        torch.manual_seed(tc.seed)  # identical initial weights everywhere (rank 0's are broadcast anyway)
        model = create_model(model_cfg)
        note = _load_from(model, from_ckpt) if from_ckpt else None
        if not resume:  # once data and weights are known to load (a resumed run's, once its checkpoint does too)
            write_run_config(cfg, out_dir, info)
        if tc.in_memory:
            data.dataset = _load_in_memory(data.dataset, console if info.is_main else None,
                                           tc.steps * tc.batch_size * tc.grad_accum * info.world_size)
        torch.manual_seed(tc.seed + 7919 * info.rank)  # per-rank stream for any randomness in training
        trainer_cls = Trainer
        if tc.clip is not None:  # video: clips of consecutive frames through the memory (train/clips.py)
            trainer_cls = ClipTrainer
        trainer = trainer_cls(cfg, model, data.dataset, out_dir, tasks=model.task_objects, train_tasks=train_tasks,
                          index_lists=data.index_lists, eval_set=data.eval_dataset, frozen=freeze or [],
                          model_config=model_cfg.model_dump(mode="json"), dist_info=info, device=device,
                          progress=progress, groups=data.groups)
        resumed = trainer.resume() if resume else False
        if resumed and trainer.step >= tc.steps:  # finished: write nothing (no duplicate final checkpoint)
            return finish_already_finished(trainer, info, console)
        if resume:  # after its checkpoint loaded: a refused resume leaves the run's config.yaml as it was
            write_run_config(cfg, out_dir, info)
        if info.is_main:
            _print_start(console, trainer, data, out_dir, device, note, resume, resumed)
        summary = fit_stoppable(trainer, resume_hint or resume_command(f"train --resume -o {out_dir}", info),
                                console if info.is_main else None)
        if info.is_main:
            summary["tb"] = str(out_dir / "tb")
            (out_dir / "train_summary.json").write_text(dumps(summary))
            console.print(f"final checkpoint: {summary['checkpoint']} (step {summary['steps']})", soft_wrap=True)
    return summary


def _load_in_memory(dataset: Any, console: Any | None, samples_drawn: int) -> InMemoryDataset:
    """``train.in_memory``: decode the training set once into RAM, saying how long it took, and saying so first
    when the run will draw fewer samples than it decodes (``samples_drawn``: steps x global batch)."""
    if console is None:
        return InMemoryDataset(dataset)
    if samples_drawn < len(dataset):  # e.g. `--set train.steps=5` on a config sized for a whole run
        console.print(f"  note: decoding all {len(dataset)} training samples, but the run draws only {samples_drawn} "
                      "(steps x global batch); fewer frames (data.datasets.NAME.frames) or train.in_memory: false "
                      "start sooner, and `hydranet generate` renders a world dataset once into shards for every run",
                      soft_wrap=True)
    # A counted bar with an ETA (plain lines in a log) that stays as the "done in N s" line: a world dataset
    # renders while it decodes, minutes for thousands of frames.
    with progress("reading training samples into memory (train.in_memory: rendered or decoded once)", len(dataset),
                  console, unit="samples") as bar:
        return InMemoryDataset(dataset, progress=lambda done, total: bar.update(done, total))


def shared_note(model: torch.nn.Module, train_tasks: list[str], frozen: list[str]) -> str | None:
    """A warning naming the heads whose outputs will change because a shared module they read trains."""
    objs = model.task_objects
    reads = {t: ["trunk", "neck"] + (["fusion"] if objs[t].space == "bev" else []) for t in objs}
    # A trained shared module changes only if a trained task back-propagates into it.
    trained = {m for t in train_tasks for m in reads[t] if m not in frozen and getattr(model, m, None) is not None}
    hit = sorted(t for t in objs if t not in train_tasks and set(reads[t]) & trained)
    if not hit:
        return None
    return (f"shared module(s) {sorted(trained)} train, so the outputs of heads {hit} will change too; "
            f"--freeze {','.join(sorted(trained))} keeps them bit-identical")


def _print_start(console: Any, trainer: Trainer, data: TrainData, out_dir: Path, device: torch.device,
                 note: str | None, resume: bool, resumed: bool) -> None:
    """The lines a run starts with: device, global batch, data per task, scheduler and balancing, rigs,
    frozen modules, where the weights came from and where the run resumed."""
    tc, info = trainer.tc, trainer.dist
    sizes = {t: len(v) for t, v in data.index_lists.items()}
    console.print(f"[bold]hydranet train[/] -> {out_dir}  device={device} world_size={info.world_size} "
                  f"global batch={tc.batch_size * tc.grad_accum * info.world_size} "
                  f"({tc.batch_size}/rank x {tc.grad_accum} accum x {info.world_size} ranks)")
    console.print(f"  data: {data.sizes} -> labelled samples per task {sizes}; scheduler "
                  f"{tc.scheduler.kind}, balancing {tc.balancing.kind}")
    if tc.clip is not None:  # a step's samples are clips: say what a "sample" is and what the memory keeps
        memory = getattr(getattr(trainer.model, "fusion", None), "temporal", None)
        kept = (f"time queue {memory.time_queue} (every {memory.push_every_frames} frames), space queue "
                f"{memory.space_queue} (every {memory.push_every_metres:g} m)" if memory is not None
                else "no video memory: frames run one by one")
        console.print(f"  video: each sample is a clip of {tc.clip.length} consecutive frames ({tc.clip.burn_in} "
                      f"burn-in without gradient); {kept}")
    if data.groups is not None:
        console.print(f"  rigs differ across datasets: batches are formed per dataset ({data.rigs})")
    if trainer.frozen:
        console.print(f"  frozen (no grad, eval mode): {trainer.frozen}")
    warn = shared_note(trainer.model, trainer.train_tasks, trainer.frozen)
    if warn:
        console.print(f"  [yellow]note:[/] {warn}")
    if note:
        console.print(f"  {note}")
    if trainer.resume_note:
        console.print(f"  [yellow]{trainer.resume_note}")
    if resumed:
        console.print(f"  resumed at step {trainer.step} (skipped steps so far: {trainer.skipped_steps})")
    elif resume:
        console.print(f"  no checkpoint in {trainer.ckpt_dir}: starting at step 0")


def fit_stoppable(trainer: Trainer, resume: str, console: Any) -> dict[str, Any]:
    """``trainer.fit()`` where Ctrl-C / SIGTERM stop it between steps (``train/interrupt.py``): it saves, and
    ``TrainingInterrupted`` names the checkpoint and the ``resume`` command (printed by rank 0's ``console``)."""
    with stop_on_signals():
        summary = trainer.fit()
        stopped_by = received_signal()
    if stopped_by is not None and summary["steps"] < summary["planned_steps"]:
        raise interrupted(summary, stopped_by, resume, console)
    return summary


def interrupted(summary: dict[str, Any], signum: int, resume: str, console: Any) -> TrainingInterrupted:
    """The ``TrainingInterrupted`` of a run stopped by signal ``signum`` after saving ``summary["checkpoint"]``, its
    message ending in the command that resumes it (the CLI's error line); rank 0 (which passes its ``console``)
    prints where it stopped first, and the other ranks' exceptions are ``quiet`` (no second error line)."""
    import signal

    name = signal.Signals(signum).name
    if console is not None:
        console.print(f"[yellow]{name}: stopped at step {summary['steps']}/{summary['planned_steps']} and saved "
                      f"{summary['checkpoint']}[/]", soft_wrap=True)
    saved = f"checkpoint {summary['checkpoint']} saved" if summary["checkpoint"] else "rank 0 saved the checkpoint"
    return TrainingInterrupted(f"interrupted by {name} at step {summary['steps']}; {saved}; resume with: {resume}",
                               EXIT_CODES.get(signum, 130), quiet=console is None)


def resume_command(args: str, info: distributed.DistInfo) -> str:
    """The command line that resumes this run: ``hydranet ARGS``, under ``torchrun`` with this job's ranks per node
    and nodes when it has several (another rank count would change the global batch)."""
    if not info.enabled:
        return f"hydranet {args}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    nodes = max(1, info.world_size // max(local, 1))
    return f"torchrun --nproc-per-node {local}" + (f" --nnodes {nodes}" if nodes > 1 else "") + f" -m hydranet {args}"


def finish_already_finished(trainer: Trainer, info: distributed.DistInfo, console: Any) -> dict[str, Any]:
    """A resumed run that is already at ``train.steps``: write nothing (no second final checkpoint, no new
    ``train_summary.json``), print one line on rank 0 and return the trainer's ``already_finished`` summary."""
    summary = trainer.fit()  # returns at once: the trainer sees it is finished
    if info.is_main:
        console.print(f"already finished at step {trainer.step}; nothing to do (final checkpoint "
                      f"{summary['checkpoint']})", soft_wrap=True)
    return summary


def default_run_dir(config: str | Path | None, from_ckpt: str | Path | None) -> Path:
    """Where ``hydranet train`` writes when ``--out`` is left out: ``runs/<config stem>``, or
    ``runs/<checkpoint name>-subgraph`` when only ``--from`` names what to train."""
    # zoo:NAME names no folder: its run is runs/zoo-NAME-subgraph
    name = Path(from_ckpt or "run").name.replace(":", "-")
    return Path("runs") / (Path(config).stem if config is not None else f"{name}-subgraph")


class RunLockedError(RuntimeError):
    """Another process is training into the same run directory; the message names its pid."""


_LOCK_NAME = "run.lock"


@contextmanager
def run_lock(out_dir: Path, info: distributed.DistInfo) -> Iterator[None]:
    """Hold ``OUT/run.lock`` (``hydranet.outputs.hold_lock``: a ``filelock`` released by the OS if the holder
    dies) for the whole run.

    Only rank 0 takes it (all ranks of one torchrun job share the directory); the outcome is
    all-reduced so every rank fails together, naming the holder's pid."""
    with ExitStack() as stack:
        refused = None
        if info.is_main:
            try:
                stack.enter_context(hold_lock(out_dir / _LOCK_NAME, str(out_dir), RunLockedError))
            except RunLockedError as e:
                refused = str(e)
        if distributed.all_reduce_sum(torch.tensor([float(refused is not None)])).item() > 0:
            raise RunLockedError(refused or f"{out_dir} is in use by another hydranet process (see rank 0)")
        yield


@contextmanager
def training_session(cfg: Config, out_dir: Path, resume: bool) -> Iterator[tuple[torch.device, distributed.DistInfo]]:
    """Threads, device, process group and the run-directory lock for one run; refuses to overwrite a
    finished run or to share the directory with a running one.

    The process group is shut down on exit, uncleanly on error (so no rank waits on a dead peer)."""
    tc = cfg.train
    if tc.eval_every and cfg.data.eval is None:  # else the run would train, never evaluate, and say nothing
        raise ConfigError(f"train.eval_every is {tc.eval_every} but data.eval (the held-out frames it evaluates) is "
                          "not set: set data.eval, or train.eval_every: 0")
    # Before the process group: every rank sees the directory as it was, before rank 0 writes into it.
    _check_run_dir(out_dir, resume)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = distributed.select_device(tc.device)
    info = distributed.init_distributed(device, tc.dist_timeout_s)
    created = not out_dir.exists()
    try:
        with run_lock(out_dir, info):
            if resume:
                note = _check_resumed_config(cfg, out_dir)
                if note and info.is_main:
                    make_console(stderr=True).print(f"  {note}", soft_wrap=True)
            yield device, info
    except BaseException:
        distributed.shutdown(clean=False)
        if created and info.is_main and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a start that failed before writing anything leaves no run directory
        raise
    distributed.shutdown()


# What a run writes into its directory, and its lock files.
_RUN_ENTRIES = frozenset({"config.yaml", "train_log.jsonl", "train_summary.json", "tb", "checkpoints"})
_LOCK_ENTRIES = frozenset({_LOCK_NAME, f"{_LOCK_NAME}.pid"})  # the lock and its holder's pid (outputs.hold_lock)


def foreign_entries(out_dir: Path) -> list[str]:
    """Sorted names in ``out_dir`` that a run does not write (``config.yaml`` counts as foreign unless it reads as a
    run's config: a mapping with ``model`` and ``train``); empty for a missing directory."""
    if not out_dir.is_dir():
        return []
    foreign = sorted(p.name for p in out_dir.iterdir()
                     if p.name not in _RUN_ENTRIES | _LOCK_ENTRIES and not _is_run_leftover(p.name))
    config = out_dir / "config.yaml"
    if config.is_file() and not _is_run_config(config):
        foreign.insert(0, "config.yaml (not a run's config)")
    return foreign


def _is_run_leftover(name: str) -> bool:
    """Whether ``name`` is the temporary file a run's own atomic write leaves when killed mid-write
    (``outputs.atomic_path``: ``.tmp-<entry>-<pid>``, e.g. the resumed run's rewrite of ``train_log.jsonl``)."""
    entry, sep, pid = name.removeprefix(".tmp-").rpartition("-")
    return name.startswith(".tmp-") and bool(sep) and pid.isdigit() and entry in _RUN_ENTRIES


def _check_run_dir(out_dir: Path, resume: bool) -> None:
    """A new run starts only in a missing or empty directory (lock files aside; one holding a finished or
    checkpointed run is named as such): it writes over ``config.yaml`` and appends to ``train_log.jsonl``, so a
    user's files of any name are never in its way. A resumed run needs
    the directory to hold a run (its ``config.yaml``) when it holds anything. ``FileExistsError`` naming the
    first entries otherwise."""
    if not out_dir.is_dir():
        return
    entries = sorted(p.name for p in out_dir.iterdir() if p.name not in _LOCK_ENTRIES)
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    if resume:
        if entries and not (out_dir / "config.yaml").is_file():
            raise FileExistsError(f"--out {out_dir} holds no run to resume (no config.yaml; it holds {shown}): "
                                  "choose the run's directory, or another --out to start one")
        return
    latest = out_dir / "checkpoints" / "latest.json"
    if latest.exists():
        raise FileExistsError(f"{out_dir} already holds a run ({latest}); pass --resume to continue it "
                              "or choose another --out")
    if entries:
        # --resume is the way on only where a run began (its config.yaml): elsewhere it would be refused in turn
        way_on = ("pass --resume to continue the run there (from step 0 when it stopped before its first "
                  "checkpoint), or choose another --out") if (out_dir / "config.yaml").is_file() else \
            "choose another --out (it holds no run to resume)"
        raise FileExistsError(f"--out {out_dir} is not empty ({shown}); a new run starts in a missing or empty "
                              f"folder: {way_on}")


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` reads as a config a run wrote (``write_run_config``: a mapping with ``model`` and ``train``)."""
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(tree, dict) and "model" in tree and "train" in tree


# What a resumed run may change: when and how often things happen, where it runs, how it is evaluated --
# never what is trained (data, model, optimisation, seed), which would silently mix two experiments.
_RESUMABLE_CHANGES = ("train.steps", "train.time_limit_s", "train.log_every", "train.ckpt_every",
                     "train.keep_checkpoints", "train.eval_every", "train.eval_batches", "train.num_workers",
                     "train.threads", "train.device", "train.dist_timeout_s", "train.max_consecutive_skips", "eval.")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): tree}


def _check_resumed_config(cfg: Config, out_dir: Path) -> str | None:
    """Compare a resumed run's config with the ``config.yaml`` it was started with, both resolved
    (``resolved_config_dict``: a file written by hand, its defaults left out, reads as the config it resolves to).
    Differences in ``_RESUMABLE_CHANGES`` are returned as one note; any other difference raises ``ConfigError``
    naming the fields and both values (resume without ``--config`` to use the run's own); a ``config.yaml`` that is
    no valid config raises ``ConfigError`` naming it."""
    stored_file = out_dir / "config.yaml"
    if not stored_file.is_file():
        return None
    stored = _flatten(_stored_config(stored_file))
    given = _flatten(resolved_config_dict(cfg))
    changed = sorted(k for k in set(stored) | set(given) if stored.get(k, "<unset>") != given.get(k, "<unset>"))
    allowed = [k for k in changed if k.startswith(_RESUMABLE_CHANGES)]
    refused = [k for k in changed if k not in allowed]

    def value(v: Any) -> str:  # None, True, False as the YAML the user writes: null, true, false
        return {None: "null", True: "true", False: "false"}[v] if v is None or isinstance(v, bool) else repr(v)

    def show(keys: list[str]) -> str:
        return ", ".join(f"{k} {value(stored.get(k, '<unset>'))} -> {value(given.get(k, '<unset>'))}"
                         for k in keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

    if refused:
        raise ConfigError(f"--resume: the config differs from the run's {stored_file} in {show(refused)}; resume "
                          "without --config or --set of those fields (the run keeps its own) or train the new config "
                          "into another --out")
    reached = _reached_step(out_dir) if "train.steps" in allowed else None
    if reached is not None and cfg.train.steps < reached:
        raise ConfigError(f"--resume: train.steps {cfg.train.steps} is below step {reached}, which the run's newest "
                          f"checkpoint has reached: give train.steps >= {reached} (the run keeps its checkpoints), or "
                          "train the new config into another --out")
    return (f"resuming with a changed config: {show(allowed)} ({stored_file.name} records the new values)"
            if allowed else None)


def _reached_step(out_dir: Path) -> int | None:
    """The step of the run's newest checkpoint (its ``latest.json``), None when it has none or it cannot be read
    (resuming then says why)."""
    try:
        step = read_state(out_dir).get("step")
    except CheckpointError:
        return None
    return step if isinstance(step, int) else None


def _stored_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml`` resolved (``resolved_config_dict``); ``ConfigError`` naming the file if it is none."""
    tree = read_yaml_mapping(path, ConfigError, "the run's config as a mapping")
    return resolved_config_dict(config_from_dict(tree, str(path)))


def write_run_config(cfg: Config, out_dir: Path, info: distributed.DistInfo) -> None:
    """Rank 0 writes the config beside the run, unless the ``config.yaml`` there already means it (a resumed run,
    or a file the user wrote by hand, comments and all, is left as it is); every rank waits for it."""
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "config.yaml"
        if not (path.is_file() and same_run_config(path, cfg)):
            path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    distributed.barrier()


def same_run_config(path: Path, cfg: Config) -> bool:
    """Whether ``path`` (a run's ``config.yaml``) is a config that resolves to ``cfg``'s (``resolved_config_dict``):
    False for a file that is no config or names a world file that cannot be read."""
    try:
        return _stored_config(path) == resolved_config_dict(cfg)
    except (ValueError, OSError):  # not a config (ConfigError), or its world file cannot be read: write ours
        return False
