"""Run an exported graph with ONNX Runtime using only the graph and its manifest.

    dm = DeployedModel("model.onnx", threads=2)
    outputs, _ = dm.run(batch)               # {task: {key: Tensor}}, the same structure HydraNet returns
    for prediction in Evaluator(dm, score=False, stream=dm.is_temporal).run(batches):
        prediction.decoded("objects3d")      # the tasks' own decoders (hydranet.eval, the one predictor loop)

No ``HydraNet`` is built and no checkpoint is read. Decoders are the tasks' ``decode`` functions
(pure functions of the outputs, the task options and the ``Setup`` in the manifest); ``bind_task`` creates
each task for the manifest's setup and runs its ``build_head`` on the *meta* device with the manifest's
``HeadContext`` only because that is where a camera task records its feature stride — no weights are
allocated or used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hydranet.data import Batch
from hydranet.deploy.manifest import ExportManifest, ExportManifestError, file_sha256, load_manifest, manifest_path
from hydranet.deploy.streaming import zero_state
from hydranet.geometry import check_finite_cameras, check_principal_points
from hydranet.model import ModelConfig
from hydranet.setup import Setup
from hydranet.tasks import HeadContext, Task, create_task


def bind_task(name: str, options: dict[str, Any], setup: Setup, ctx: HeadContext) -> Task:
    """A task ready to ``decode``/``draw``/``make_metric`` for a model of ``setup`` with head context ``ctx``."""
    task = create_task(name, setup, **options)
    with torch.device("meta"):
        task.build_head(ctx)  # a camera task records its feature stride; the module is discarded
    return task


def session_options(threads: int | None, spin: bool = True) -> Any:
    """``spin=False`` stops idle pool threads busy-waiting: slower on a dedicated machine, fairer on a shared one."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def check_graph_bytes(graph: Path, manifest: ExportManifest) -> None:
    """Refuse a graph whose bytes are not the ones export/quantize wrote (flipped weight bytes run without any
    error in ONNX Runtime and give NaN or wrong outputs)."""
    digest = file_sha256(graph)
    if digest != manifest.graph_sha256:
        raise ExportManifestError(f"{graph}: sha256 {digest[:16]}… differs from the manifest's "
                            f"{manifest.graph_sha256[:16]}…: the graph was modified or replaced after export; "
                            "re-export it")


class DeployedModel:
    """An ONNX graph + manifest: inputs checked against the manifest, outputs regrouped per task.

    ``manifest`` default: ``<stem>.manifest.json`` beside the graph. Raises ``FileNotFoundError`` for a missing
    graph, ``ExportManifestError`` for a bad manifest, a graph whose sha256 differs from it, a graph ONNX Runtime
    cannot load, or inputs/outputs that differ from the manifest's."""

    def __init__(self, graph: str | Path, manifest: str | Path | ExportManifest | None = None,
                 threads: int | None = None, providers: list[str] | None = None, spin: bool = True):
        import onnxruntime as ort

        self.path = Path(graph)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX graph not found")
        if isinstance(manifest, ExportManifest):
            self.manifest = manifest
        else:
            self.manifest = load_manifest(manifest if manifest is not None else manifest_path(self.path))
        m = self.manifest
        check_graph_bytes(self.path, m)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads, spin),
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for corrupt/invalid graphs
            raise ExportManifestError(f"{self.path}: ONNX Runtime cannot load the graph ({e})") from None
        got_in = [i.name for i in self.session.get_inputs()]
        want_in = [i.name for i in m.inputs]
        if got_in != want_in:
            raise ExportManifestError(f"{self.path}: graph inputs {got_in} differ from the manifest's {want_in}")
        got_out = {o.name for o in self.session.get_outputs()}
        missing = [o for o in m.output_names() if o not in got_out]
        if missing:
            raise ExportManifestError(f"{self.path}: manifest outputs {missing} are not in the graph (wrong manifest?)")
        ctx = m.head_ctx()
        self.tasks: dict[str, Task] = {name: bind_task(name, spec.options, m.setup, ctx)
                                       for name, spec in m.tasks.items()}
        # Temporal graphs (deploy/streaming.py) take the memory as inputs and return the new one: the caller owns
        # it between calls (``hydranet.eval.Streamer``), as the car's runtime would.
        self.is_temporal = m.is_temporal
        fed = sorted(s.feeds for s in m.state_outputs)
        if self.is_temporal and fed != sorted(self._state_names()):
            raise ExportManifestError(f"{self.path}: the manifest's state_outputs feed {fed}, not the graph's state "
                                      f"inputs {sorted(self._state_names())} (exported before hydranet recorded them? "
                                      "re-export the checkpoint)")
        missing = [s.name for s in m.state_outputs if s.name not in got_out]
        if missing:
            raise ExportManifestError(f"{self.path}: manifest state outputs {missing} are not in the graph")

    @property
    def single_frame(self) -> bool:
        """Whether ``run`` works without a state: a temporal graph only steps (``run_step``)."""
        return not self.is_temporal

    @property
    def setup(self) -> Setup:
        """The ``Setup`` the graph was exported for (``manifest.setup``): its rig, image size, grid, vocabularies."""
        return self.manifest.setup

    @property
    def cfg(self) -> ModelConfig:
        """The ``ModelConfig`` of the exported network, as the manifest recorded it (plain data, no weights)."""
        return ModelConfig.model_validate(self.manifest.architecture)

    @property
    def batch_size(self) -> int:
        """The graph's fixed batch size B (``manifest.batch``); ``run`` splits larger batches into B-chunks."""
        return self.manifest.batch

    def run_arrays(self, images: np.ndarray, intrinsics: np.ndarray, T_ego_from_cam: np.ndarray,
                   camera_valid: np.ndarray | None = None, **extra: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the graph on exactly ``manifest.batch`` samples; returns ``{output name: array}``.
        ``camera_valid`` bool ``[B, N]`` (None = every camera works) feeds graphs with fusion; ``extra``: the
        streaming inputs of a temporal graph (``T_world_from_ego``, ``timestamp``, ``state.*``)."""
        if camera_valid is None:
            camera_valid = np.ones(images.shape[:2], dtype=bool)
        given = {"images": images, "intrinsics": intrinsics, "T_ego_from_cam": T_ego_from_cam,
                 "camera_valid": camera_valid, **extra}
        missing = [spec.name for spec in self.manifest.inputs if spec.name not in given]
        if missing:
            raise ValueError(f"{self.path}: inputs {missing} not given (a temporal graph needs the ego motion and "
                             "the state: use DeployedModel.run_step)")
        # Only the inputs the graph has: a camera-only graph takes images alone.
        feeds = {spec.name: given[spec.name] for spec in self.manifest.inputs}
        for spec in self.manifest.inputs:
            x = feeds[spec.name]
            if list(x.shape) != spec.shape or str(x.dtype) != spec.dtype:
                raise ValueError(f"{self.path}: input '{spec.name}' must be {spec.dtype} {spec.shape}, "
                                 f"got {x.dtype} {list(x.shape)}")
        if "intrinsics" in feeds:  # the eager model's rules: finite geometry, a working camera's K in input pixels
            K = torch.from_numpy(np.asarray(intrinsics))
            check_finite_cameras(K, torch.from_numpy(np.asarray(T_ego_from_cam)), f"{self.path}: ")
            check_principal_points(K, tuple(self.manifest.setup.image_size),
                                   torch.from_numpy(np.asarray(camera_valid, dtype=bool)), f"{self.path}: ")
        names = self.manifest.output_names() + [s.name for s in self.manifest.state_outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))

    def _state_names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs if i.name.startswith("state.")]

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> dict[str, np.ndarray]:
        """The zero state of a temporal graph as ONNX feeds (``state.*``); ``batch_size`` must be
        ``manifest.batch`` (the graph runs exactly that many sequences), else ``ValueError``."""
        if batch_size != self.manifest.batch:
            raise ValueError(f"{self.path}: a temporal graph runs exactly {self.manifest.batch} sequence(s) per "
                             f"call, got a batch of {batch_size}")
        return zero_state(self.manifest.inputs)

    def reset_rows(self, state: dict[str, np.ndarray], rows: Tensor) -> dict[str, np.ndarray]:
        """``state`` with the rows where ``rows`` (bool ``[B]``) is True set to zero (in place; returned)."""
        for b in torch.nonzero(rows).flatten().tolist():
            for k in state:
                state[k][b] = 0.0
        return state

    def run_step(self, batch: Batch, state: dict[str, np.ndarray], tasks: list[str] | None = None,
                 camera_valid: Tensor | None = None) -> tuple[dict[str, dict[str, Tensor]], dict[str, np.ndarray]]:
        """One frame of ``manifest.batch`` sequences through a temporal graph: the outputs of ``tasks`` (default:
        all) and the new state (``new_state.*`` as the next call's ``state.*``). Raises ``ValueError`` when
        ``len(batch)`` is not ``manifest.batch`` or the cameras are not the manifest's."""
        m = self.manifest
        self.check_batch(batch)
        if len(batch) != m.batch:
            raise ValueError(f"{self.path}: a temporal graph runs exactly {m.batch} sequence(s) per call, "
                             f"got a batch of {len(batch)}")
        arrays = self.run_arrays(batch.images.cpu().contiguous().numpy(),
                                 batch.intrinsics.float().cpu().contiguous().numpy(),
                                 batch.T_ego_from_cam.float().cpu().contiguous().numpy(),
                                 None if camera_valid is None else camera_valid.cpu().numpy(),
                                 T_world_from_ego=batch.T_world_from_ego.float().cpu().contiguous().numpy(),
                                 timestamp=batch.timestamp.float().cpu().contiguous().numpy(), **state)
        out: dict[str, dict[str, Tensor]] = {}
        for spec in m.outputs:
            out.setdefault(spec.task, {})[spec.key] = torch.from_numpy(arrays[spec.name])
        return self._select(out, tasks), {s.feeds: arrays[s.name] for s in m.state_outputs}

    def run(self, batch: Batch, tasks: list[str] | None = None, camera_valid: Tensor | None = None,
            ) -> tuple[dict[str, dict[str, Tensor]], None]:
        """The outputs of ``tasks`` (default: all the graph holds) on a collated ``Batch`` of any size, split into
        graph-sized chunks (the last padded by repetition, padding dropped); ``camera_valid`` bool ``[B, N]``
        marks failed cameras. A graph exposes no camera features (second value None). Raises ``ValueError`` when
        the cameras, their count or the image size differ from the manifest's, ``KeyError`` naming the graph when
        it has no head for a requested task."""
        m = self.manifest
        self.check_batch(batch)
        images = batch.images
        b, n = images.shape[:2]
        if n != m.num_cameras or tuple(images.shape[-2:]) != tuple(m.image_size):
            raise ValueError(f"{self.path}: graph expects {m.num_cameras} cameras of {tuple(m.image_size)}, "
                             f"got images {tuple(images.shape)}")
        chunks: list[dict[str, np.ndarray]] = []
        for s in range(0, b, m.batch):
            idx = [min(i, b - 1) for i in range(s, s + m.batch)]
            arrays = self.run_arrays(images[idx].cpu().contiguous().numpy(),
                                     batch.intrinsics[idx].float().cpu().contiguous().numpy(),
                                     batch.T_ego_from_cam[idx].float().cpu().contiguous().numpy(),
                                     None if camera_valid is None else camera_valid[idx].cpu().numpy())
            keep = min(m.batch, b - s)
            chunks.append({k: v[:keep] for k, v in arrays.items()})
        out: dict[str, dict[str, Tensor]] = {}
        for spec in m.outputs:
            out.setdefault(spec.task, {})[spec.key] = torch.from_numpy(np.concatenate([c[spec.name] for c in chunks]))
        return self._select(out, tasks), None

    def _select(self, out: dict[str, dict[str, Tensor]], tasks: list[str] | None) -> dict[str, dict[str, Tensor]]:
        missing = [t for t in tasks or [] if t not in out]
        if missing:
            raise KeyError(f"{self.path}: the graph has no head for {missing}; it holds {sorted(out)}")
        return {t: out[t] for t in (tasks if tasks is not None else out)}

    def check_batch(self, batch: Batch) -> None:
        """Raise ``ValueError`` unless ``batch``'s cameras are the manifest's ``camera_names``, in that order."""
        names = list(batch.camera_names)
        if names != self.manifest.camera_names:
            raise ValueError(f"{self.path}: frames have cameras {names}, the graph expects "
                             f"{self.manifest.camera_names} in that order")
