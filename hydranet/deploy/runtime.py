"""Run an exported graph with ONNX Runtime using only the graph and its manifest.

    dm = DeployedModel("model.onnx", threads=2)
    outputs = dm(batch)                      # {task: {key: Tensor}}, the same structure HydraNet returns
    decoded = dm.decode(outputs, batch)      # {task: [per-sample decoded]} via the tasks' own decoders

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

from hydranet.data.sample import Batch
from hydranet.deploy.manifest import ExportManifest, ExportManifestError, file_sha256, load_manifest, manifest_path
from hydranet.deploy.streaming import zero_state
from hydranet.setup import Setup
from hydranet.tasks.base import HeadContext, Task, create_task


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
        # Temporal graphs (deploy/streaming.py): this object owns the memory between calls, as the car would.
        self.streaming = any(i.name.startswith("state.") for i in m.inputs)
        fed = sorted(s.feeds for s in m.state_outputs)
        if self.streaming and fed != sorted(self._state_names()):
            raise ExportManifestError(f"{self.path}: the manifest's state_outputs feed {fed}, not the graph's state "
                                      f"inputs {sorted(self._state_names())} (exported before hydranet recorded them? "
                                      "re-export the checkpoint)")
        missing = [s.name for s in m.state_outputs if s.name not in got_out]
        if missing:
            raise ExportManifestError(f"{self.path}: manifest state outputs {missing} are not in the graph")
        self.state: dict[str, np.ndarray] | None = None
        self._where: list[tuple[str, int]] = []

    def reset_state(self) -> None:
        """Start a new sequence: the next call feeds the zero state."""
        self.state = None
        self._where = []

    @property
    def batch_size(self) -> int:
        """The graph's fixed batch size B (``manifest.batch``); ``forward`` splits larger batches into B-chunks."""
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
                             "the state: use DeployedModel.step)")
        # Only the inputs the graph has: a camera-only graph takes images alone.
        feeds = {spec.name: given[spec.name] for spec in self.manifest.inputs}
        for spec in self.manifest.inputs:
            x = feeds[spec.name]
            if list(x.shape) != spec.shape or str(x.dtype) != spec.dtype:
                raise ValueError(f"{self.path}: input '{spec.name}' must be {spec.dtype} {spec.shape}, "
                                 f"got {x.dtype} {list(x.shape)}")
        names = self.manifest.output_names() + [s.name for s in self.manifest.state_outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))

    def _state_names(self) -> list[str]:
        return [i.name for i in self.manifest.inputs if i.name.startswith("state.")]

    def step(self, batch: Batch, camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """One frame of ``manifest.batch`` sequences through a temporal graph, carrying the state; a row whose
        ``scene_id`` changes or whose ``frame_index`` does not grow starts from the zero state. Raises
        ``ValueError`` when ``len(batch)`` is not ``manifest.batch``."""
        m = self.manifest
        if len(batch) != m.batch:
            raise ValueError(f"{self.path}: a temporal graph runs exactly {m.batch} sequence(s) per call, "
                             f"got a batch of {len(batch)}")
        where = list(zip(batch.scene_id, batch.frame_index.tolist(), strict=True))
        zero = zero_state(m.inputs)
        if self.state is None:
            self.state = zero
        else:
            for b, ((s, f), (ps, pf)) in enumerate(zip(where, self._where, strict=True)):
                if s != ps or f <= pf:
                    for k in self.state:
                        self.state[k][b] = 0.0
        arrays = self.run_arrays(batch.images.cpu().contiguous().numpy(),
                                 batch.intrinsics.float().cpu().contiguous().numpy(),
                                 batch.T_ego_from_cam.float().cpu().contiguous().numpy(),
                                 None if camera_valid is None else camera_valid.cpu().numpy(),
                                 T_world_from_ego=batch.T_world_from_ego.float().cpu().contiguous().numpy(),
                                 timestamp=batch.timestamp.float().cpu().contiguous().numpy(), **self.state)
        self.state = {s.feeds: arrays[s.name] for s in m.state_outputs}
        self._where = where
        out: dict[str, dict[str, Tensor]] = {}
        for spec in m.outputs:
            out.setdefault(spec.task, {})[spec.key] = torch.from_numpy(arrays[spec.name])
        return out

    def forward(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor,
                camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """Any batch size: split into graph-sized chunks (the last padded by repetition, padding dropped).
        Inputs as ``run_arrays`` (uint8 images ``[B, N, 3, H, W]``, K in pixels, T_ego_from_cam in metres); raises
        ``ValueError`` when the camera count or image size differs from the manifest's."""
        m = self.manifest
        b, n = images.shape[:2]
        if n != m.num_cameras or tuple(images.shape[-2:]) != tuple(m.image_size):
            raise ValueError(f"{self.path}: graph expects {m.num_cameras} cameras of {tuple(m.image_size)}, "
                             f"got images {tuple(images.shape)}")
        chunks: list[dict[str, np.ndarray]] = []
        for s in range(0, b, m.batch):
            idx = [min(i, b - 1) for i in range(s, s + m.batch)]
            arrays = self.run_arrays(images[idx].cpu().contiguous().numpy(),
                                     intrinsics[idx].float().cpu().contiguous().numpy(),
                                     T_ego_from_cam[idx].float().cpu().contiguous().numpy(),
                                     None if camera_valid is None else camera_valid[idx].cpu().numpy())
            keep = min(m.batch, b - s)
            chunks.append({k: v[:keep] for k, v in arrays.items()})
        out: dict[str, dict[str, Tensor]] = {}
        for spec in m.outputs:
            out.setdefault(spec.task, {})[spec.key] = torch.from_numpy(np.concatenate([c[spec.name] for c in chunks]))
        return out

    def __call__(self, batch: Batch, camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """Every output of the graph on a collated ``Batch``, ``{task: {key: Tensor [B, ...]}}``;
        ``camera_valid`` bool ``[B, N]`` marks failed cameras (see ``forward``)."""
        self.check_batch(batch)
        if self.streaming:
            return self.step(batch, camera_valid)
        return self.forward(batch.images, batch.intrinsics, batch.T_ego_from_cam, camera_valid)

    def forward_batch(self, batch: Batch, tasks: list[str] | None = None,
                      camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """``HydraNet.forward_batch``'s interface (what ``hydranet.eval.loop.evaluate`` drives): the
        graph runs every head it holds; the outputs of ``tasks`` (default: all) are returned.
        Raises ``KeyError`` naming the graph when it has no head for a requested task."""
        out = self(batch, camera_valid)
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

    def decode(self, outputs: dict[str, dict[str, Tensor]], batch: Batch) -> dict[str, list[Any]]:
        """``{task: [decoded per sample]}`` from the graph's ``outputs`` by each task's own ``decode``; raises
        ``KeyError`` if ``outputs`` lacks a task the graph holds."""
        return {name: task.decode(outputs[name], batch) for name, task in self.tasks.items()}
