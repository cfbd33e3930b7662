"""``merge``: combine heads trained separately on the same trunk into one checkpoint.

Owners fine-tune their heads in parallel (``hydranet train --from BASE --tasks lanes --freeze ...``);
``_merge_checkpoints(BASE, [HEAD_CKPT, ...])`` builds one network: trunk, neck and fusion (and every
head nobody re-trained) from BASE, each named head from its checkpoint. It refuses, naming both sides:

- a head checkpoint whose trunk hash (trunk + neck tensors) differs from BASE's: its head learned on
  other features, so its outputs on BASE's trunk would be wrong;
- a BEV head whose checkpoint's fusion differs from BASE's (same reason, one module later);
- two checkpoints that both supply the same head, or a checkpoint whose model settings (image size,
  grid, channels…) differ from BASE's.

Which heads a checkpoint supplies: ``PATH:task,task`` names them; a bare ``PATH`` supplies the tasks
that run trained (``train_tasks`` in its state), minus those whose weights equal BASE's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hydranet.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint, trunk_hash
from hydranet.config_errors import setting_differences
from hydranet.model import ZOO_SCHEME, ModelConfig, create_model
from hydranet.tasks import create_task


class MergeError(ValueError):
    """Checkpoints that cannot be merged; the message names them."""


def _module_hash(state: dict[str, Tensor], prefix: str) -> str:
    """Hash (``trunk_hash``) of the tensors of ``state`` whose names start with ``prefix`` (e.g. ``"fusion."``);
    ``"none"`` when there are none."""
    return trunk_hash(state, (prefix,)) if any(k.startswith(prefix) for k in state) else "none"


def parse_head_spec(spec: str) -> tuple[str, list[str] | None]:
    """``run/ft_lanes:lanes,depth`` -> (path, [tasks]); a bare path -> (path, None). A ':' followed by
    something that is not a task list (e.g. a Windows drive) is left in the path, and so is a zoo entry's own
    ``zoo:NAME`` (``zoo:tiny`` is the entry, ``zoo:tiny:lanes`` its lanes head)."""
    path, sep, tail = spec.rpartition(":")
    if sep and f"{path}:" == ZOO_SCHEME:
        return spec, None
    if sep and tail and all(t.strip().isidentifier() for t in tail.split(",")):
        return path, [t.strip() for t in tail.split(",")]
    return spec, None


@dataclass
class MergePlan:
    """Which checkpoint supplies each head: ``base`` (trunk, neck, fusion and unnamed heads), ``heads``
    ``{task: checkpoint}``, and the merged ``ModelConfig`` tree."""

    base: Checkpoint
    heads: dict[str, Checkpoint] = field(default_factory=dict)  # task -> the checkpoint supplying it
    model_config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, str]:
        """``{task: checkpoint path}`` of the heads taken from head checkpoints."""
        return {t: str(c.path) for t, c in self.heads.items()}


def _settings(model_config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model_config.items() if k != "tasks"}


def _head_tensors(state: dict[str, Tensor], task: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith(f"heads.{task}.")}


def plan_merge(base: str | Path, specs: list[str]) -> MergePlan:
    """Check every head checkpoint against BASE and decide which head comes from where."""
    if not specs:
        raise MergeError("name at least one HEAD_CKPT to merge into BASE")
    b = load_checkpoint(base)
    b_hash = trunk_hash(b.model)
    b_fusion = _module_hash(b.model, "fusion.")
    if not b.state.get("model_config"):
        raise MergeError(f"{b.name}: state.json has no model_config (not written by hydranet train?)")
    plan = MergePlan(b, model_config=dict(b.state["model_config"]))
    tasks_cfg = dict(plan.model_config.get("tasks") or {})
    for spec in specs:
        path, named = parse_head_spec(spec)
        c = load_checkpoint(path)
        c_hash = trunk_hash(c.model)
        if c_hash != b_hash:
            raise MergeError(f"{c.name}: trained on trunk {c_hash[:16]}… but BASE {b.name} has trunk {b_hash[:16]}…: "
                             "its heads learned on other features; fine-tune them from BASE with a frozen trunk "
                             f"(hydranet train --from {b.name} --freeze trunk,neck)")
        c_cfg = c.state.get("model_config") or {}
        if _settings(c_cfg) != _settings(plan.model_config):
            diff = setting_differences(_settings(c_cfg), _settings(plan.model_config))
            raise MergeError(f"{c.name}: model settings differ from BASE {b.name}: " + "; ".join(diff) +
                             ". A head trained for another rig, size or grid cannot sit on BASE's network; a "
                             "checkpoint that only added a rig can be BASE itself (its trunk is BASE's)")
        c_tasks = c_cfg.get("tasks") or {}
        if named is None:
            trained = c.state.get("train_tasks") or list(c_tasks)
            named = [t for t in trained if t not in tasks_cfg or any(
                not torch.equal(v, b.model.get(k, torch.empty(0))) for k, v in _head_tensors(c.model, t).items())]
            if not named:
                raise MergeError(f"{c.name}: supplies no head that differs from BASE {b.name}; name one as PATH:task")
        for task in named:
            if task not in c_tasks or not _head_tensors(c.model, task):
                raise MergeError(f"{c.name}: has no head '{task}' (its heads: {sorted(c_tasks)})")
            if task in plan.heads:
                raise MergeError(f"head '{task}' is supplied by both {plan.heads[task].name} and {c.name}; "
                                 f"choose one with PATH:task lists")
            space = _task_space(task)
            if space == "bev" and _module_hash(c.model, "fusion.") != b_fusion:
                raise MergeError(f"{c.name}: BEV head '{task}' was trained with a fusion module that differs from "
                                 f"BASE {b.name}'s; train it with --freeze trunk,neck,fusion to merge it")
            plan.heads[task] = c
            tasks_cfg[task] = c_tasks[task]
    plan.model_config["tasks"] = tasks_cfg
    return plan


def _task_space(name: str) -> str:
    return create_task(name).space


def build_merged(plan: MergePlan) -> nn.Module:
    """The merged model (eval mode): BASE's tensors, each planned head's from its checkpoint."""
    model = create_model(ModelConfig.model_validate(plan.model_config))
    state = {k: v for k, v in plan.base.model.items() if not any(k.startswith(f"heads.{t}.") for t in plan.heads)}
    for task, c in plan.heads.items():
        state |= _head_tensors(c.model, task)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise MergeError(f"merged tensors do not fit the merged model config ({e})") from None
    return model.eval()


def save_merged(plan: MergePlan, model: nn.Module, out: str | Path, gate: dict[str, Any] | None = None) -> Path:
    """Write ``OUT/checkpoints/merged`` (+ ``latest.json``), so ``load_model(OUT)`` and every command
    taking a run directory accept it. No optimizer state: a merged network is a new starting point."""
    out = Path(out)
    config = dict(plan.base.state.get("config") or {})
    if config:
        config["model"] = plan.model_config
    digest = hashlib.sha256("|".join(f"{t}={c.path}" for t, c in sorted(plan.heads.items())).encode()).hexdigest()
    state = {"step": plan.base.state.get("step", 0), "config": config, "model_config": plan.model_config,
             "train_tasks": sorted(plan.heads), "frozen": [],
             "merge": {"base": str(plan.base.path), "heads": plan.summary(), "id": digest[:16], "gate": gate}}
    if (out / "checkpoints" / "latest.json").exists():
        raise CheckpointError(f"{out}: already holds a checkpoint; choose another -o")
    return save_checkpoint(out / "checkpoints" / "merged", model, state)


def _merge_checkpoints(base: str | Path, specs: list[str], out: str | Path) -> tuple[Path, MergePlan, nn.Module]:
    """Plan, build and save in one call (no gate); returns the checkpoint path, plan and model."""
    plan = plan_merge(base, specs)
    model = build_merged(plan)
    return save_merged(plan, model, out), plan, model
