"""The one predictor loop: batches of frames -> a model -> decoded outputs and, when asked, metrics.

Everything that runs a network over frames goes through ``Evaluator``: the trainer's periodic eval and the
demo (with its pictures), the suites and the gate, ``export --verify``, ``quantize`` and the deployed-graph
suites, ``hydranet predict``, ``infer``, ``view``, the miner (model and shadow graph) and the auto-labeller.

    from hydranet.eval import Evaluator, dataset_batches, evaluate

    results = evaluate(model, dataset_batches(dataset, batch_size=8))      # {task: {metric: float}}
    predictor = Evaluator(graph, score=False, stream=graph.is_temporal)    # an ONNX graph, its memory carried
    for prediction in predictor.run(batches):
        boxes = prediction.decoded("objects3d")                            # one decoded output per frame

What runs (``model``), through ``predictor_of``:

- a ``HydraNet`` (eager; ``EagerPredictor``),
- anything that already is a ``Predictor`` — ``hydranet.deploy.DeployedModel`` (an ONNX graph) is one,
- a plain function ``forward(batch, tasks) -> {task: {key: Tensor}}`` with ``tasks=`` given (the trainer
  passes its own, which runs under the training precision and DDP wrapper).

``stream=True`` runs the frames through a ``Streamer``: the model's video memory is carried from batch to
batch, one sequence per batch row (a row whose ``scene_id`` changes or whose ``frame_index`` does not grow
starts from the reset state), and the targets carry ``sequence = (scene_id, frame_index)`` for the temporal
metrics (``hydranet.metrics.temporal``). The state lives in the ``Streamer``, never in the model.

Decoding and targets are the tasks' (``Task.decode``, ``Task.targets``), so a checkpoint and its exported
graph are scored by exactly the same code. ``on_frame`` sees every frame's decoded outputs and targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from hydranet.data import Batch, collate
from hydranet.eval.sequence import sequence_starts
from hydranet.eval.tracking import TRACKED_TASK, SequenceTrackers, TrackerOptions
from hydranet.metrics import Metric
from hydranet.model import HydraNet
from hydranet.tasks import Task

Outputs = dict[str, dict[str, Tensor]]
Features = dict[str, Tensor]


@runtime_checkable
class Predictor(Protocol):
    """A model as the loop runs it: collated ``Batch`` in, raw head outputs ``{task: {key: Tensor}}`` out
    (camera outputs ``[B, N, ...]``, BEV outputs ``[B, ...]``).

    ``run`` is one batch of independent frames; it also returns the camera features the outputs were computed
    from where the model exposes them (``{level: [B*N, C, h, w]}``; None for a graph). A temporal model
    (``is_temporal``) also steps: ``run_step`` takes the memory ``state`` of B sequences and returns the new one,
    ``init_state`` is the reset state and ``reset_rows`` resets the rows of a bool ``[B]`` mask. The state is
    opaque to the loop (``TemporalState`` for a ``HydraNet``, ONNX feeds for a graph)."""

    tasks: dict[str, Task]

    @property
    def is_temporal(self) -> bool:
        """Whether the model carries a video memory (``run_step``)."""

    @property
    def single_frame(self) -> bool:
        """Whether ``run`` works without a state (a temporal ONNX graph has no such path: it only steps)."""

    def run(self, batch: Batch, tasks: list[str], camera_valid: Tensor | None = None,
            ) -> tuple[Outputs, Features | None]:
        """One batch of independent frames."""

    def init_state(self, batch_size: int, device: torch.device | str) -> Any:
        """The reset state of ``batch_size`` sequences."""

    def reset_rows(self, state: Any, rows: Tensor) -> Any:
        """``state`` with the rows where ``rows`` (bool ``[B]``) is True reset."""

    def run_step(self, batch: Batch, state: Any, tasks: list[str], camera_valid: Tensor | None = None,
                 ) -> tuple[Outputs, Any]:
        """One frame of B sequences: outputs and the new state."""


class EagerPredictor:
    """A ``HydraNet`` as a ``Predictor``. ``keep_features``: ``run`` returns the camera features too (the
    miner's embedding reads the coarsest FPN level)."""

    def __init__(self, model: HydraNet, keep_features: bool = False):
        self.model = model
        self.tasks: dict[str, Task] = model.task_objects
        self.keep_features = keep_features

    @property
    def is_temporal(self) -> bool:
        """Whether the network has the video memory (``HydraNet.is_temporal``)."""
        return self.model.is_temporal

    @property
    def single_frame(self) -> bool:
        """Always: a temporal network's ``forward`` runs one frame from the reset state."""
        return True

    def run(self, batch: Batch, tasks: list[str], camera_valid: Tensor | None = None,
            ) -> tuple[Outputs, Features | None]:
        """``HydraNet.forward`` on the batch (``forward_features`` on its camera features with ``keep_features``)."""
        m = self.model
        if not self.keep_features:
            return m(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=tasks, camera_valid=camera_valid), None
        feats = m.camera_features(batch.images)
        outputs = m.forward_features(feats, batch.intrinsics, batch.T_ego_from_cam, tasks,
                                     tuple(batch.images.shape[-2:]), camera_valid)
        return outputs, feats

    def init_state(self, batch_size: int, device: torch.device | str) -> Any:
        """``HydraNet.init_state``."""
        return self.model.init_state(batch_size, device)

    def reset_rows(self, state: Any, rows: Tensor) -> Any:
        """``TemporalState.reset_where``."""
        return state.reset_where(rows)

    def run_step(self, batch: Batch, state: Any, tasks: list[str], camera_valid: Tensor | None = None,
                 ) -> tuple[Outputs, Any]:
        """``HydraNet.forward_step`` with the batch's ego pose and timestamps (float32 seconds)."""
        return self.model.forward_step(batch.images, batch.intrinsics, batch.T_ego_from_cam, batch.T_world_from_ego,
                                       batch.timestamp.to(batch.images.device).float(), state, tasks, camera_valid)


class _FunctionPredictor:
    """``forward(batch, tasks[, camera_valid=...]) -> outputs`` as a single-frame ``Predictor``."""

    is_temporal = False
    single_frame = True

    def __init__(self, forward: Callable[..., Outputs], tasks: dict[str, Task]):
        self.forward = forward
        self.tasks = tasks

    def run(self, batch: Batch, tasks: list[str], camera_valid: Tensor | None = None,
            ) -> tuple[Outputs, Features | None]:
        if camera_valid is None:
            return self.forward(batch, tasks), None
        return self.forward(batch, tasks, camera_valid=camera_valid), None

    def init_state(self, batch_size: int, device: torch.device | str) -> Any:
        raise ValueError("a forward function has no video memory")

    def reset_rows(self, state: Any, rows: Tensor) -> Any:
        raise ValueError("a forward function has no video memory")

    def run_step(self, batch: Batch, state: Any, tasks: list[str], camera_valid: Tensor | None = None,
                 ) -> tuple[Outputs, Any]:
        raise ValueError("a forward function has no video memory")


def predictor_of(model: Any, tasks: dict[str, Task] | None = None, keep_features: bool = False) -> Predictor:
    """``model`` as a ``Predictor`` (see the module docstring). A plain function needs ``tasks``. Raises
    ``TypeError`` for anything else."""
    if isinstance(model, HydraNet):
        return EagerPredictor(model, keep_features)
    if isinstance(model, Predictor):
        return model
    if callable(model) and not isinstance(model, nn.Module):
        if tasks is None:
            raise TypeError("a forward function carries no tasks: pass tasks= explicitly")
        return _FunctionPredictor(model, dict(tasks))
    raise TypeError(f"cannot evaluate a {type(model).__name__}: expected a HydraNet, a Predictor (e.g. DeployedModel) "
                    "or a function forward(batch, tasks)")


class Streamer:
    """The video memory of B parallel sequences run through one ``Predictor``: it owns the state between calls.

    Each call is one frame per sequence (batch row). A row whose ``scene_id`` differs from the previous call's,
    or whose ``frame_index`` does not grow, starts from the reset state; ``reset()`` forgets every row (a gap in
    the data). A changed batch size without ``reset()`` is a ``ValueError``, not a silent reset. A single-frame
    model just runs ``Predictor.run``.
    """

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.state: Any = None  # the memory after the last call (None: reset)
        self._where: list[tuple[str, int]] = []  # (scene_id, frame_index) per row of the last call

    def reset(self) -> None:
        """Forget the history: the next call starts every sequence from the reset state."""
        self.state = None
        self._where = []

    def __call__(self, batch: Batch, tasks: list[str], camera_valid: Tensor | None = None) -> Outputs:
        """The outputs of one frame of every sequence in ``batch``, the memory carried to the next call."""
        if not self.predictor.is_temporal:
            return self.predictor.run(batch, tasks, camera_valid)[0]
        where = list(zip(batch.scene_id, batch.frame_index.tolist(), strict=True))
        if self.state is None:
            self.state = self.predictor.init_state(len(batch), batch.images.device)
        elif len(where) != len(self._where):
            raise ValueError(f"streaming: batch size changed from {len(self._where)} to {len(where)} without reset()")
        else:
            new_sequence = torch.tensor(sequence_starts(where, self._where))
            if bool(new_sequence.any()):
                self.state = self.predictor.reset_rows(self.state, new_sequence)
        self._where = where
        outputs, self.state = self.predictor.run_step(batch, self.state, tasks, camera_valid)
        return outputs


@dataclass
class Prediction:
    """One batch through the model: its raw ``outputs`` and, decoded on first use and kept, every task's
    decoded outputs (``decoded(task)``: one per frame, the task's label format + ``scores``). ``features``: the
    camera features of an ``EagerPredictor(keep_features=True)``, else None."""

    batch: Batch
    outputs: Outputs
    tasks: dict[str, Task]
    features: Features | None = None
    _decoded: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    _probabilities: dict[str, list[Tensor]] = field(default_factory=dict, repr=False)

    def decoded(self, task: str) -> list[Any]:
        """``Task.decode`` of ``task``'s outputs: one decoded output per frame of the batch."""
        if task not in self._decoded:
            self._decoded[task] = self.tasks[task].decode(self.outputs[task], self.batch)
        return self._decoded[task]

    def track(self, trackers: SequenceTrackers) -> None:
        """Replace the decoded ``objects3d`` of every frame by ``trackers``' tracked version (track ids, velocity
        from the track); the trackers carry their tracks to the next batch of the same sequences."""
        b = self.batch
        self._decoded[TRACKED_TASK] = trackers(self.decoded(TRACKED_TASK), b.scene_id, b.frame_index,
                                               b.T_world_from_ego, b.timestamp)

    def probabilities(self, task: str) -> list[Tensor]:
        """Per-frame probabilities of a dense task that offers ``probabilities`` (drivable, bev_semantic)."""
        if task not in self._probabilities:
            self._probabilities[task] = self.tasks[task].probabilities(self.outputs[task], self.batch)
        return self._probabilities[task]

    def targets(self, task: str) -> list[Any]:
        """``Task.targets``: ``task``'s label per frame (None where the frame lacks it)."""
        return self.tasks[task].targets(self.batch)


@dataclass
class EvalFrame:
    """One evaluated frame, as the ``on_frame`` hook sees it.

    ``index`` counts frames from 0 over the whole run (batch order); ``position`` is the frame's row in
    ``batch``. ``decoded[task]`` is the task's decoded output for this frame (label format, ``Task.decode``),
    ``targets[task]`` its label or None when the frame lacks it, and ``outputs[task][key]`` the raw head tensor
    of this frame (a view, batch dimension removed).
    """

    index: int
    batch: Batch
    position: int
    decoded: dict[str, Any]
    targets: dict[str, Any]
    outputs: Outputs


def name_cameras(metrics: Iterable[Metric], names: Sequence[str]) -> None:
    """Per-camera results keyed by the rig's camera names (``ap/main``), not ``cam0``..``cam7``: every metric that
    scores per camera (``num_cameras``) and has no names yet takes ``names`` (a batch's ``camera_names``)."""
    for m in metrics:
        if getattr(m, "camera_names", "absent") is None and getattr(m, "num_cameras", None) == len(names):
            m.camera_names = tuple(names)


def with_sequence(targets: list[Any], batch: Batch) -> list[Any]:
    """``targets`` (one per sample) with ``sequence = (scene_id, frame_index)`` added to dict targets."""
    return [dict(t, sequence=(batch.scene_id[i], int(batch.frame_index[i]))) if isinstance(t, dict) else t
            for i, t in enumerate(targets)]


class Evaluator:
    """The loop: ``step(batch)`` runs one batch through the model, decodes it and (``score``) updates every
    task's metric; ``compute()`` gives the metrics.

    ``tasks``: the tasks to run (default: the model's). ``metrics`` may be given (e.g. ``FrameMetric``s whose
    records a suite keeps); by default each task's ``make_metric()``; ``score=False`` keeps none (prediction
    only: outputs are decoded on demand by ``Prediction.decoded``). ``device``: batches are moved there.
    ``stream``: run through a ``Streamer`` (``self.streamer``; ``reset()`` forgets the history); None (default)
    streams only a model without a single-frame path (a temporal ONNX graph). ``tracking``: when streaming,
    ``objects3d`` detections are tracked over the frames (``hydranet.eval.tracking``): each gets a ``track_id``
    and its track's velocity, which the metrics then score. ``on_frame``: called for every frame after its
    metrics were updated. The evaluator never changes a module's train/eval mode: ``evaluate`` does that around
    the loop. Raises ``ValueError`` for ``tracking`` without streaming or without an ``objects3d`` task.
    """

    def __init__(self, model: Any, tasks: dict[str, Task] | None = None, *, metrics: dict[str, Metric] | None = None,
                 score: bool = True, on_frame: Callable[[EvalFrame], None] | None = None,
                 device: torch.device | str | None = None, stream: bool | None = None, keep_features: bool = False,
                 tracking: TrackerOptions | None = None):
        self.predictor = predictor_of(model, tasks, keep_features)
        if stream is None:
            stream = not self.predictor.single_frame
        elif not stream and not self.predictor.single_frame:
            raise ValueError("this model runs only with its memory (a temporal graph): stream it")
        self.tasks = dict(tasks) if tasks is not None else dict(self.predictor.tasks)
        self.names = sorted(self.tasks)
        self.streamer = Streamer(self.predictor) if stream else None
        if tracking is not None and (not stream or TRACKED_TASK not in self.tasks):
            raise ValueError(f"tracking follows {TRACKED_TASK} boxes over streamed frames: it needs stream=True and an "
                             f"{TRACKED_TASK} task (tasks: {self.names})")
        self.trackers = SequenceTrackers(tracking) if tracking is not None else None
        if metrics is None:
            metrics = {t: self.tasks[t].make_metric() for t in self.names} if score else {}
        missing = [t for t in self.names if metrics and t not in metrics]
        if missing:
            raise ValueError(f"no metric for task(s) {missing}")
        self.metrics = metrics
        self.on_frame = on_frame
        self.device = device
        self.frames = 0

    def reset(self) -> None:
        """A streaming evaluator forgets the history (``Streamer.reset``, and the tracks); no-op otherwise."""
        if self.streamer is not None:
            self.streamer.reset()
        if self.trackers is not None:
            self.trackers.reset()

    @torch.no_grad()
    def step(self, batch: Batch, camera_valid: Tensor | None = None) -> Prediction:
        """Run one batch (``camera_valid [B, N]`` bool marks failed cameras), score it, call ``on_frame``."""
        if self.device is not None:
            batch = batch.to(self.device)
        if self.streamer is not None:
            outputs, features = self.streamer(batch, self.names, camera_valid), None
        else:
            outputs, features = self.predictor.run(batch, self.names, camera_valid)
        prediction = Prediction(batch, outputs, self.tasks, features)
        if self.trackers is not None:
            prediction.track(self.trackers)
        if self.metrics or self.on_frame is not None:
            name_cameras(self.metrics.values(), batch.camera_names)
            targets = {t: prediction.targets(t) for t in self.names}
            for t, metric in self.metrics.items():
                scored = with_sequence(targets[t], batch) if self.streamer is not None else targets[t]
                metric.update(prediction.decoded(t), scored)
            if self.on_frame is not None:
                for i in range(len(batch)):
                    self.on_frame(EvalFrame(
                        index=self.frames + i, batch=batch, position=i,
                        decoded={t: prediction.decoded(t)[i] for t in self.names},
                        targets={t: targets[t][i] for t in self.names},
                        outputs={t: {k: v[i] for k, v in outputs[t].items()} for t in self.names}))
        self.frames += len(batch)
        return prediction

    def run(self, batches: Iterable[Batch]) -> Iterator[Prediction]:
        """``step`` over ``batches``, yielding each ``Prediction``."""
        for batch in batches:
            yield self.step(batch)

    def compute(self, sync: bool = False) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` (first key = the task's headline); ``sync`` merges DDP ranks first."""
        results = {}
        for t, metric in self.metrics.items():
            if sync:
                metric.sync()
            results[t] = {k: float(v) for k, v in metric.compute().items()}
        return results


@torch.no_grad()
def evaluate(model: Any, batches: Iterable[Batch], tasks: dict[str, Task] | None = None, *,
             device: torch.device | str | None = None, on_frame: Callable[[EvalFrame], None] | None = None,
             sync: bool = False, model_module: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """Score ``model`` on ``batches``: ``{task: {metric: value}}``, the first key the headline.

    ``model``: see the module docstring (HydraNet, DeployedModel or ``forward(batch, tasks)``).
    ``tasks``: the tasks to score (default: the model's). ``device``: batches are moved there.
    ``on_frame(EvalFrame)``: called for every frame after its metrics were updated. ``sync``: merge
    metric state across DDP ranks before computing (every rank must call it). An ``nn.Module``
    ``model`` (or ``model_module`` when ``model`` is a function wrapping one) is put in eval mode
    for the loop and restored afterwards.
    """
    module = model if isinstance(model, nn.Module) else model_module
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        evaluator = Evaluator(model, tasks, on_frame=on_frame, device=device)
        for batch in batches:
            evaluator.step(batch)
        return evaluator.compute(sync=sync)
    finally:
        if module is not None:
            module.train(was_training)


@torch.no_grad()
def evaluate_clips(model: Any, dataset: Dataset, clips: list[list[int]], tasks: list[str],
                   device: str | torch.device = "cpu", metrics: dict[str, Metric] | None = None,
                   on_frame: Callable[[EvalFrame], None] | None = None) -> dict[str, dict[str, float]]:
    """Stream every clip (consecutive dataset indices of one scene, ``hydranet.eval.sequence``) through
    ``model``, one frame at a time from the reset state, and score every frame; returns ``{task: metrics}``.
    Puts an ``nn.Module`` in eval mode."""
    if isinstance(model, nn.Module):
        model.eval()
    predictor = predictor_of(model)
    evaluator = Evaluator(predictor, {t: predictor.tasks[t] for t in tasks}, metrics=metrics, on_frame=on_frame,
                          device=device, stream=True)
    for clip in clips:
        evaluator.reset()
        for i in clip:
            evaluator.step(collate([dataset[i]]))
    return evaluator.compute()


def dataset_batches(dataset: Dataset, batch_size: int = 4, max_batches: int | None = None, rank: int = 0,
                    world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Batches of a map-style dataset of ``Sample`` for ``evaluate``, in index order.

    ``max_batches`` caps the frames at ``max_batches * batch_size * world_size``. Under DDP each
    rank takes a strided share (``rank::world_size``) so the ranks together see every frame once;
    pass ``sync=True`` to ``evaluate`` to merge them.
    """
    n = len(dataset)  # type: ignore[arg-type]
    limit = n if max_batches is None else min(n, max_batches * batch_size * world_size)
    indices = list(range(rank, limit, world_size))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
