"""CLI commands: ``hydranet train`` and ``hydranet demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from hydranet.cli.app import CHECKPOINT_HELP, app
from hydranet.cli.errors import cli_errors
from hydranet.train import (
    Config,
    ConfigError,
    default_demo_config,
    default_run_dir,
    load_config,
    load_train_config,
    run_demo,
    run_subgraph,
    run_training,
    with_worlds_inline,
)


def _train_config(config: Path | None, overrides: list[str], from_ckpt: Path | None) -> Config:
    """The training config: ``--config`` with ``--set`` overrides, else the ``--from`` checkpoint's own. The world
    files a ``--config`` names are read now, so an error reading one names the config that names it."""
    if config is not None:
        try:
            return with_worlds_inline(load_config(config, overrides))
        except ConfigError as e:
            if str(e).startswith(str(config)):
                raise
            raise ConfigError(f"{config}: {e}", e.fields, e.general) from None
    if from_ckpt is not None:  # sub-graph training on a trained network: reuse its config
        return load_train_config(None, overrides, from_ckpt)
    raise typer.BadParameter("pass a config, --from CKPT to reuse its config, or --resume -o RUN",
                             param_hint="--config")


def _freeze_list(freeze: str | None, trained: bool) -> list[str]:
    """``--freeze`` as a list of shared modules; unknown names, or freezing a network that starts untrained
    (no ``--from``/``--resume``), are a ``BadParameter``."""
    freeze_list = [m.strip() for m in freeze.split(",") if m.strip()] if freeze else []
    bad = sorted(set(freeze_list) - {"trunk", "neck", "fusion"})
    if bad:
        raise typer.BadParameter(f"unknown module(s) {bad}; choose from trunk, neck, fusion", param_hint="--freeze")
    if freeze_list and not trained:
        raise typer.BadParameter("freezing an untrained trunk makes no sense: pass --from CKPT", param_hint="--freeze")
    return freeze_list


@app.command()
def train(
    config: Path = typer.Option(None, "--config", "-c", help="Training config YAML (sections data, model, train). "
                                "Optional with --from: the checkpoint's own config is used."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a config field, e.g. --set train.lr=1e-3 "
                                   "(repeatable; the value is YAML)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (checkpoints/, tb/, train_log.jsonl). "
                             "Default: runs/<config name>."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its newest valid checkpoint "
                                "(--config may be left out: the run's own config.yaml is used)."),
    from_ckpt: Path = typer.Option(None, "--from", help="Initialise from a trained model (" + CHECKPOINT_HELP
                                   + "); the config may add tasks whose heads start fresh."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated tasks to train; the other heads are frozen "
                              "and not run (sub-graph training)."),
    freeze: str = typer.Option(None, "--freeze", help="Comma-separated shared modules to freeze too: trunk, neck, "
                               "fusion (no gradients, BatchNorm statistics frozen)."),
    add_task: list[str] = typer.Option([], "--add-task", help="Add a new task to the --from network and train only "
                                       "its head (trunk, neck, fusion frozen unless --freeze says otherwise); "
                                       "repeatable. See docs/subgraph.md."),
    from_cache: Path = typer.Option(None, "--from-cache", help="Train the heads on a feature cache (hydranet "
                                    "cache-features) instead of images; refused unless its trunk hash is --from's."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Plain log lines instead of a live progress bar."),
) -> None:
    """Train a HydraNet. Distributed: torchrun --nproc-per-node N -m hydranet train --config ...

    Every task's loss, the balancing weights, lr and skipped steps go to TensorBoard (OUT/tb).
    """

    with cli_errors():
        if config is None and resume:
            if out is not None and (out / "config.yaml").is_file():
                # The run stores its resolved config, tasks added with --add-task included: it, not --from's
                # config, is what the run continues (the resume command a stopped run prints names --from too).
                config = out / "config.yaml"
            elif from_ckpt is None:  # nothing to take a config from
                if out is None:
                    raise typer.BadParameter("needs -o RUN, the run directory to continue", param_hint="--resume")
                raise typer.BadParameter(f"{out} holds no run to resume (no {out / 'config.yaml'}); start one "
                                         "there with --config, or name the run's directory", param_hint="--resume")
        cfg = _train_config(config, set_, from_ckpt)
        freeze_list = _freeze_list(freeze, trained=bool(from_ckpt or resume))
        task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        run_dir = out or default_run_dir(config, from_ckpt)
        if add_task or from_cache:
            run_subgraph(cfg, run_dir, from_ckpt=from_ckpt, tasks=task_list, add_tasks=add_task,
                         freeze=freeze_list, cache=from_cache, resume=resume, progress=not no_progress)
        else:
            run_training(cfg, run_dir, resume=resume, from_ckpt=str(from_ckpt) if from_ckpt else None,
                         tasks=task_list, freeze=freeze_list, progress=not no_progress)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where data, run, pictures and metrics go."),
    config: Path = typer.Option(None, "--config", "-c", help="Demo config (default: configs/demo.yaml)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a config field, e.g. --set train.steps=50."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if OUT holds a finished run (it is "
                                 "reused only when the config and the rendered data are the run's own)."),
    pictures: int = typer.Option(None, "--pictures", min=0, help="Frames to draw (default: eval.pictures)."),
    temporal: bool = typer.Option(False, "--temporal", help="Video: the network with the BEV memory, trained on "
                                  "clips (configs/temporal.yaml; OUT defaults to runs/demo-temporal)."),
) -> None:
    """The first thing to run: render a small synthetic set, train all seven tasks (<= 10 min on 2 CPU
    cores), evaluate on held-out frames, and write pictures + a metrics table into OUT."""

    if temporal:
        config = config or default_demo_config("temporal.yaml")
        out = Path("runs/demo-temporal") if out == Path("runs/demo") else out
    with cli_errors():
        run_demo(out, config, set_, retrain=retrain, pictures=pictures)
