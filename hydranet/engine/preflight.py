"""Pre-flight check of a ``pipeline.yaml``: every path and reference is opened before stage 1 runs.

A pipeline that only fails at its eval stage has already spent minutes mining, labelling and
training; ``preflight`` opens the model, pool (checked against the model's setup), train config (and its
base datasets), teacher, shadow graph, triggers and every eval suite up front, so a typo costs a second,
not a run.
Every failure is a ``PipelineError`` naming the pipeline file and the field.
"""

from __future__ import annotations

from pathlib import Path

from hydranet.datasets import dataset_setup
from hydranet.engine.mine import build_triggers
from hydranet.engine.pipeline import Pipeline, PipelineError
from hydranet.engine.pool import load_mining_model, model_tasks, open_pool
from hydranet.engine.triggers import parse_trigger_specs
from hydranet.eval import check_suite, load_suite
from hydranet.train import load_train_config, open_source, resolve_device


def preflight(pipe: Pipeline, resume_checkpoint: str | None = None) -> None:
    """Open every reference of ``pipe``; raises ``PipelineError`` ("<file>: <field>: <why>") on the first
    one that fails. ``resume_checkpoint``: the promoted model of a resumed run (checked instead of ``model``)."""
    where = pipe.path or "pipeline"

    def check(field: str, fn, *args):  # noqa: ANN001, ANN202 - a thin wrapper naming the field
        try:
            return fn(*args)
        except PipelineError:
            raise
        except (ValueError, KeyError, OSError) as e:
            raise PipelineError(f"{where}: {field}: {str(e).strip(chr(39))}") from None

    model = check("model (the promoted checkpoint of current.json)" if resume_checkpoint else "model",
                  load_mining_model, resume_checkpoint or pipe.model)
    pool = check("pool", open_pool, pipe.pool)
    if getattr(model, "cfg", None) is not None:  # a checkpoint: the pool's frames must fit its setup
        check("pool", model.cfg.check_data, dataset_setup(pool), str(pipe.pool), "the model")
    if pipe.label.kind == "oracle":
        check("pool", open_pool, pipe.pool, True)
    own = "train_config (not set: the model's own training config with train.overrides)"
    cfg = check("train_config" if pipe.train_config else own, load_train_config, pipe.train_config,
                list(pipe.train.overrides), pipe.model)
    for name, ds in sorted(cfg.data.datasets.items()):
        check(f"train_config: data.datasets.{name}", open_source, ds)
    check("train_config", resolve_device, cfg.train.device, "train.device")  # before mining, not at training
    specs = check("mine.triggers", parse_trigger_specs, pipe.mine.triggers)
    check("mine.triggers", build_triggers, specs, model_tasks(model))
    if pipe.mine.shadow not in (None, "current"):
        check("mine.shadow", load_mining_model, pipe.mine.shadow)
    if pipe.label.kind == "auto":
        check("label.teacher", load_mining_model, pipe.label.teacher)
    for k, suite in enumerate(pipe.eval.suites):
        if not Path(suite).exists():
            raise PipelineError(f"{where}: eval.suites[{k}]: {suite}: no such suite file (looked relative to the "
                                "pipeline file, the working directory and the shipped suites/)")
        loaded = check(f"eval.suites[{k}]", load_suite, suite)
        # The metric names and scenarios too, before minutes of mining and training (not at the eval stage).
        check(f"eval.suites[{k}]", check_suite, loaded, {"model": model})
