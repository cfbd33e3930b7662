"""Run models over a suite's frames with streaming per-task metrics.

Each model is scored by the one evaluation loop (``hydranet.eval.loop.Evaluator``), fed the same
batches. Frames are planned from the suite alone — (scenario, seed, sample index) — so every model sees the
same frames: the gate evaluates baseline and candidate in one pass over the rendered worlds.
Per task, the metric keeps one record per frame whose label is present; ``TaskEval.frames`` maps
records back to frames (report thumbnails, per-scenario numbers, the gate's bootstrap).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from hydranet.data import Sample, collate
from hydranet.eval.loop import EvalFrame, Evaluator, predictor_of
from hydranet.eval.sequence import clip_indices
from hydranet.eval.suite import Suite, SuiteError, lower_is_better
from hydranet.eval.tracking import TRACKED_TASK, TrackerOptions
from hydranet.json_files import to_jsonable
from hydranet.metrics import NO_GROUND_TRUTH, FrameMetric
from hydranet.setup import SetupMismatchError
from hydranet.world import SyntheticWorld


@dataclass(frozen=True)
class FrameId:
    """One suite frame: scenario name, world seed and frame index in that world (``scenario/seedS#I``)."""

    scenario: str
    seed: int
    index: int

    def __str__(self) -> str:
        return f"{self.scenario}/seed{self.seed}#{self.index}"


@dataclass
class TaskEval:
    """One task of one model on one suite."""

    name: str
    metric: FrameMetric
    frames: list[int] = field(default_factory=list)  # frame number (into SuiteRun.frames) of each record
    metrics: dict[str, float] = field(default_factory=dict)
    per_scenario: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        """The headline metric's name: the first key of ``metrics``."""
        return next(iter(self.metrics))

    def frame_scores(self) -> np.ndarray:
        """The headline metric of every record alone (for worst-first ordering)."""
        key = self.headline
        return np.array([self.metric.compute_frames([i], keys=(key,))[key] for i in range(self.metric.num_frames)])


@dataclass
class SuiteRun:
    """A model's results on a suite."""

    suite: Suite
    frames: list[FrameId]
    tasks: dict[str, TaskEval]
    skipped: list[str]  # suite tasks the model has no head for
    seconds: float = 0.0


def plan_frames(suite: Suite, world_len: Callable[[str, int], int], frames: int | None = None,
                scene_len: Callable[[str, int], int] | None = None) -> list[FrameId]:
    """Every (scenario, seed, index) the suite evaluates; ``frames`` overrides ``suite.frames``. With
    ``suite.sequence`` each planned frame expands to the clip ending at it (``scene_len``: frames per scene)."""
    s = suite if frames is None else suite.model_copy(update={"frames": frames})
    if s.sequence is None:
        return [FrameId(name, seed, i) for name in s.scenarios for seed in range(*s.seeds)
                for i in s.frame_indices(world_len(name, seed))]
    if scene_len is None:
        raise ValueError("plan_frames: a sequence suite needs scene_len (frames per scene of each world)")
    return [FrameId(name, seed, i) for name in s.scenarios for seed in range(*s.seeds)
            for clip in clip_indices(s.frame_indices(world_len(name, seed)), scene_len(name, seed), s.sequence)
            for i in clip]


def _model_world_fields(model: nn.Module) -> dict[str, Any]:
    """World settings the model fixes: its ``setup`` (the world renders its first rig at its image size, on its
    grid, in its classes; a suite may not contradict it)."""
    cfg = getattr(model, "cfg", None)
    return {} if cfg is None else {"setup": cfg.setup.model_dump(mode="json")}


class Worlds:
    """Lazily built ``SyntheticWorld`` per (scenario, seed) rendering the first model's setup, checked against
    every model (``ModelConfig.check_data``) and against the suite's ``dead_cameras`` when built: ``SuiteError``
    before any frame is rendered."""

    def __init__(self, suite: Suite, models: dict[str, nn.Module]):
        self._cls = SyntheticWorld
        self.suite = suite
        self.fields = _model_world_fields(next(iter(models.values()))) if models else {}
        self.models = models
        self._cache: dict[tuple[str, int], Any] = {}
        for scenario in suite.scenarios:  # at load time, before any frame is rendered
            cfg = self.checked_config(scenario, suite.seeds[0])
            _check_dead_cameras(suite, [c.name for c in cfg.rendered_rig.cameras])

    def checked_config(self, scenario: str, seed: int) -> Any:
        """The scenario's ``WorldConfig``; ``SuiteError`` if a model was not built for its layout."""

        cfg = self.suite.world_config(scenario, seed, **self.fields)
        for label, m in self.models.items():
            if getattr(m, "cfg", None) is not None:
                try:
                    m.cfg.check_data(cfg.rendered_setup, f"{self.suite.path}: scenario '{scenario}'",
                                     f"model '{label}'")
                except SetupMismatchError as e:
                    raise SuiteError(str(e)) from None
        return cfg

    def __call__(self, scenario: str, seed: int) -> Any:
        key = (scenario, seed)
        if key not in self._cache:
            self._cache[key] = self._cls(self.checked_config(scenario, seed))
        return self._cache[key]

    def sample(self, frame: FrameId) -> Sample:
        """The ``Sample`` of ``frame`` (its world is built once and cached)."""
        return self(frame.scenario, frame.seed)[frame.index]


def _batches(frames: list[FrameId], size: int) -> Iterator[list[int]]:
    """Frame numbers in batches that never mix (scenario, seed) worlds."""
    cur: list[int] = []
    for i, f in enumerate(frames):
        if cur and (len(cur) == size or (frames[cur[0]].scenario, frames[cur[0]].seed) != (f.scenario, f.seed)):
            yield cur
            cur = []
        cur.append(i)
    if cur:
        yield cur


def _record_frames(tasks: dict[str, TaskEval]) -> Callable[[EvalFrame], None]:
    """An ``on_frame`` hook noting, per task, which frame each metric record came from. Frames are
    evaluated in plan order, so the evaluator's running frame index is the frame number."""
    def record(frame: EvalFrame) -> None:
        for name, te in tasks.items():
            if frame.targets[name] is not None:
                te.frames.append(frame.index)
    return record


def unknown_dead_cameras(suite: Suite, camera_names: Iterable[str]) -> list[str]:
    """The suite's ``dead_cameras`` that are not cameras of a rig with ``camera_names`` (empty: the suite applies)."""
    names = set(camera_names)
    return [c for c in suite.dead_cameras if c not in names]


def _check_dead_cameras(suite: Suite, camera_names: Iterable[str]) -> None:
    """``SuiteError`` naming the field unless every camera in ``suite.dead_cameras`` is one of ``camera_names``."""
    names = list(camera_names)
    unknown = unknown_dead_cameras(suite, names)
    if unknown:
        raise SuiteError(f"{suite.path}: dead_cameras: {unknown} are not cameras of the rig {names}")


def check_suite(suite: Suite, models: dict[str, Any]) -> None:
    """Everything ``run_suite`` would refuse about ``suite`` for ``models`` that is known before a frame is rendered:
    a scenario the models were not built for, dead cameras their rig lacks, a threshold or tolerance on a metric
    a task does not produce. ``SuiteError`` naming the file and field; cheap (no world is rendered)."""
    Worlds(suite, models)
    for model in models.values():
        heads = predictor_of(model).tasks
        for name, spec in suite.tasks.items():
            if name not in heads:  # judged by check_thresholds (a missing head fails unless allowed)
                continue
            metric = heads[name].make_metric()
            known = metric.metric_names() if isinstance(metric, FrameMetric) else None
            for kind, names in (("thresholds", spec.thresholds), ("tolerance", spec.tolerance or {})):
                for m in names:
                    if known is not None and m.split("/")[0] not in known:
                        raise SuiteError(f"{suite.path}: tasks.{name}.{kind}.{m}: task '{name}' has no metric "
                                         f"'{m}'; its metrics: {sorted(known)} (a '/' suffix names a class, state "
                                         "or camera)")


@torch.no_grad()
def dead_camera_mask(suite: Suite, batch: Any) -> torch.Tensor | None:
    """``camera_valid [B, N]`` for ``suite.dead_cameras`` (None when every camera works); blacks out their
    images in ``batch`` in place. An unknown camera name is a ``SuiteError`` naming the field."""
    if not suite.dead_cameras:
        return None
    names = list(batch.camera_names)
    _check_dead_cameras(suite, names)
    valid = torch.tensor([n not in suite.dead_cameras for n in names], device=batch.images.device)
    batch.images[:, ~valid] = 0
    return valid[None].expand(len(batch), -1).contiguous()


def tracks_objects(suite: Suite, model_tasks: Iterable[str]) -> bool:
    """Whether ``run_suite(..., tracking=)`` tracks a model with ``model_tasks`` on ``suite``: a video suite
    (``sequence``) that scores ``objects3d``, which the model has."""
    return suite.sequence is not None and TRACKED_TASK in suite.tasks and TRACKED_TASK in model_tasks


def run_suite(models: dict[str, Any], suite: Suite, device: str | torch.device = "cpu", batch_size: int = 4,
              frames: int | None = None, on_batch: Callable[[int, int], None] | None = None,
              tracking: TrackerOptions | None = None) -> dict[str, SuiteRun]:
    """Evaluate every model (label -> model) on the same frames of ``suite``.

    ``frames`` overrides the suite's frames per (scenario, seed); ``on_batch(done, total)`` reports
    progress in frames. ``tracking``: on a video suite (``sequence``), every model's ``objects3d`` boxes are
    tracked over each clip and scored with their tracks' velocity (``hydranet.eval.tracking``); a suite of
    single frames has nothing to track and ignores it.
    """
    t0 = time.perf_counter()
    worlds = Worlds(suite, models)
    plan = plan_frames(suite, lambda s, seed: len(worlds(s, seed)), frames,
                       lambda s, seed: worlds(s, seed).config.frames_per_scene)
    if suite.sequence is not None:  # video: one frame at a time, in order, through each model's memory
        batch_size = 1
    state: dict[str, tuple[dict[str, TaskEval], list[str]]] = {}
    for label, model in models.items():
        if isinstance(model, nn.Module):
            model.eval()
        objs = predictor_of(model).tasks
        tasks = {}
        for name in suite.tasks:
            if name not in objs:
                continue
            metric = objs[name].make_metric()
            if not isinstance(metric, FrameMetric):
                raise TypeError(f"task '{name}' metric {type(metric).__name__} is not a hydranet.metrics.FrameMetric "
                                "(the suite runner needs per-frame records)")
            tasks[name] = TaskEval(name, metric)
        state[label] = (tasks, [t for t in suite.tasks if t not in objs])
    evaluators = {}
    for label, model in models.items():
        tasks, _ = state[label]
        if tasks:
            # A video suite streams every model; otherwise only a model that has no single-frame path.
            stream = True if suite.sequence is not None else None
            tracked = tracking if tracks_objects(suite, tasks) else None
            evaluators[label] = Evaluator(model, {n: predictor_of(model).tasks[n] for n in tasks},
                                          metrics={n: te.metric for n, te in tasks.items()},
                                          on_frame=_record_frames(tasks), stream=stream, tracking=tracked)
    done = 0
    for numbers in _batches(plan, batch_size):
        batch = collate([worlds.sample(plan[i]) for i in numbers]).to(device)
        camera_valid = dead_camera_mask(suite, batch)
        for evaluator in evaluators.values():
            evaluator.step(batch, camera_valid=camera_valid)
        done += len(numbers)
        if on_batch is not None:
            on_batch(done, len(plan))
    runs = {}
    for label, (tasks, skipped) in state.items():
        for te in tasks.values():
            te.metrics = te.metric.compute()
            for scen in suite.scenarios:
                idx = [r for r, f in enumerate(te.frames) if plan[f].scenario == scen]
                te.per_scenario[scen] = te.metric.compute_frames(idx) if idx else {}
        runs[label] = SuiteRun(suite, plan, tasks, skipped, time.perf_counter() - t0)
    return runs


# The two reasons a check or a gate row is "skipped" rather than judged.
NO_HEAD = "model has no head for this task"
_NO_GROUND_TRUTH_HERE = f"{NO_GROUND_TRUTH} on these frames"
NOT_JUDGED = ("not judged: no frame of this suite holds ground truth for any of the task's checks (more frames, "
              "or seeds whose frames hold it)")


@dataclass
class Check:
    """One threshold of a suite on one metric; ``reason`` says why it was skipped or why an undefined (NaN)
    value failed."""

    suite: str
    task: str
    metric: str
    threshold: str
    value: float
    status: str  # "pass" | "fail" | "skipped"
    reason: str = ""


def judge_undefined(te: TaskEval, metric: str) -> tuple[str, str]:
    """``(status, reason)`` of a NaN result: ``skipped`` when the frames hold no ground truth for it (e.g.
    ``recall/red`` without a red light), else ``fail`` with the metric's reason (e.g. "no match"). The one rule
    ``hydranet eval``, ``hydranet gate`` and the report share."""
    why = te.metric.undefined_reason(metric)
    return ("skipped", _NO_GROUND_TRUTH_HERE) if why == NO_GROUND_TRUTH else ("fail", f"undefined: {why}")


def fail_unjudged(rows: list[Any]) -> list[Any]:
    """``rows`` (``Check``s or gate rows: ``suite``, ``task``, ``status``, ``reason``) with every row of a task that
    was skipped for want of ground truth turned into a failure (``NOT_JUDGED``), when no row of that task in that
    suite was judged: a suite that judged nothing of a task must not pass it (``--frames 1`` on a suite whose
    lights are in later frames). A task with one judged row keeps its other rows skipped."""
    judged = {(r.suite, r.task) for r in rows if not (r.status == "skipped" and r.reason == _NO_GROUND_TRUTH_HERE)}
    return [replace(r, status="fail", reason=NOT_JUDGED)
            if r.status == "skipped" and r.reason == _NO_GROUND_TRUTH_HERE and (r.suite, r.task) not in judged else r
            for r in rows]


def check_thresholds(run: SuiteRun, allow_missing_tasks: bool = False) -> list[Check]:
    """Pass/fail of every threshold; skipped for a metric without ground truth on these frames
    (``judge_undefined``), failed when that leaves a task with nothing judged (``fail_unjudged``). A threshold
    on a task the model lacks **fails** (a suite that checks nothing must not pass), unless
    ``allow_missing_tasks`` (``hydranet eval --allow-missing-tasks``) marks it skipped. A metric name the task
    does not produce, or one it never scores (``Metric.unscored``), is a ``SuiteError``."""
    out = []
    suite = run.suite
    for name, spec in suite.tasks.items():
        if name in run.skipped:
            status = "skipped" if allow_missing_tasks else "fail"
            out += [Check(suite.name, name, m, str(t), math.nan, status, NO_HEAD)
                    for m, t in spec.thresholds.items()]
            continue
        te = run.tasks[name]
        for m, thr in spec.thresholds.items():
            if m not in te.metrics:
                raise SuiteError(f"{suite.path}: tasks.{name}.thresholds.{m}: task '{name}' has no metric '{m}'; "
                                 f"available: {sorted(te.metrics)}")
            never = te.metric.unscored(m)
            if never is not None:
                raise SuiteError(f"{suite.path}: tasks.{name}.thresholds.{m}: {never}, so a threshold on it could "
                                 "never be checked")
            value = te.metrics[m]
            if math.isnan(value):
                status, reason = judge_undefined(te, m)
            else:
                status, reason = ("pass" if thr.passes(value) else "fail"), ""
            out.append(Check(suite.name, name, m, str(thr), value, status, reason))
    return fail_unjudged(out)


def worst_frames(run: SuiteRun, k: int) -> list[tuple[int, float]]:
    """``k`` frame numbers ordered worst-first by the mean per-frame badness over tasks (0 best, 1
    worst: 1 - score for higher-is-better headlines in [0, 1], min(score, 1) for error metrics)."""
    bad = np.zeros(len(run.frames))
    cnt = np.zeros(len(run.frames))
    for te in run.tasks.values():
        scores = te.frame_scores()
        b = np.clip(scores, 0, 1) if lower_is_better(te.headline) else 1 - np.clip(scores, 0, 1)
        for f, v in zip(te.frames, b, strict=True):
            if not math.isnan(v):
                bad[f] += v
                cnt[f] += 1
    mean = np.where(cnt > 0, bad / np.maximum(cnt, 1), -1.0)
    order = np.argsort(-mean, kind="stable")[:k]
    return [(int(i), float(mean[i])) for i in order if cnt[i] > 0]


def run_to_json(run: SuiteRun, checks: list[Check]) -> dict[str, Any]:
    """A JSON-ready report of one suite run: suite fields, frame count, seconds, overall pass, and per
    task the metrics (an undefined one null, with its reason in ``undefined``: ``Metric.undefined``) and
    threshold checks."""
    s = run.suite
    return to_jsonable({
        "suite": s.name, "path": s.path, "description": s.description, "frames": len(run.frames),
        "scenarios": list(s.scenarios), "seeds": list(s.seeds), "seconds": round(run.seconds, 2),
        "passed": all(c.status != "fail" for c in checks), "skipped_tasks": run.skipped,
        "tasks": {name: {"headline": te.headline, "frames": len(te.frames), "metrics": te.metrics,
                         "undefined": te.metric.undefined(te.metrics), "per_scenario": te.per_scenario,
                         "checks": [vars(c) for c in checks if c.task == name]}
                  for name, te in run.tasks.items()},
    })
