"""Export one ONNX graph for the whole rig and the chosen heads, plus its manifest.

    manifest = export_onnx(model, "model.onnx", tasks=["detection2d", "drivable"], opset=17, batch=1)

The graph is written for one rig of the model's ``Setup`` (``rig``: a name of ``model.setup.rigs``, default the
first): its camera count and order are fixed, the rig's nominal K (at the network input size) and
T_ego_from_cam trace it, and the manifest records that rig with the setup (nothing is rebuilt from the
training data). The graph takes the model's own inputs — ``images`` uint8 ``[B, N, 3, H, W]``,
``intrinsics [B, N, 3, 3]``, ``T_ego_from_cam [B, N, 4, 4]`` — normalises inside, runs the trunk once over
all cameras (folded into the batch) and returns one named output per head tensor (``"detection2d.heatmap"``).
Only the sub-graph the chosen tasks need is traced: ``HydraNet.forward(tasks=...)`` never calls fusion for camera-only
requests, so the graph holds no fusion node and none of its weights.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. In torch 2.13 the default
dynamo exporter needs ``onnxscript`` (not a hydranet dependency); the TorchScript path exports every op
the model uses (``grid_sample`` needs opset >= 16) with no model change and matches eager to ~1e-6.
The batch size is fixed at export (``batch``): the fused graph folds ``B * N`` cameras into reshapes.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

import hydranet
from hydranet.checkpoint import CheckpointError, load_model
from hydranet.checkpoint import trunk_hash as compute_trunk_hash
from hydranet.deploy import streaming
from hydranet.deploy.manifest import (
    ExportedTaskSpec,
    ExportManifest,
    HeadContextSpec,
    InputSpec,
    Normalisation,
    OutputSpec,
    check_graph_output,
    file_sha256,
    manifest_path,
    write_export_manifest,
)
from hydranet.outputs import atomic_path

DEFAULT_OPSET = 17
_MIN_OPSET = 16  # GridSample (camera -> BEV fusion) entered ONNX in opset 16: graphs with a BEV task
_MIN_CAMERA_OPSET = 13  # camera-only graphs (conv trunk, FPN, heads): Resize/Split with tensor inputs need 13


def _max_opset() -> int:
    """The newest opset the installed ``torch.onnx.export(..., dynamo=False)`` writes: above it the exporter fails
    with ``RuntimeError: Unsupported onnx_opset_version`` after dumping the traced graph to stdout. torch keeps it
    in ``torch.onnx._constants.ONNX_MAX_OPSET`` (23 in torch 2.13, where a HydraNet graph exports at 23 and matches
    eager; ``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``, 20, only bounds a warning); 20 if a torch lacks the constant."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - every torch >= 2.4 has it
        return 20
    return int(getattr(_constants, "ONNX_MAX_OPSET", 20))


MAX_OPSET = _max_opset()
_INPUT_NAMES = ("images", "intrinsics", "T_ego_from_cam", "camera_valid")  # camera_valid: graphs with fusion
_RIG_NOTE = ("Camera order and image size are fixed by the graph. Intrinsics K and extrinsics T_ego_from_cam are "
            "graph inputs: pass the calibration of the car the frame came from, K rescaled to setup.image_size. "
            "setup.rigs holds the nominal rig the graph was exported for (each camera's native size, K and "
            "T_ego_from_cam); BEV outputs are only as good as K/T are close to what training saw.")


class ExportError(RuntimeError):
    """Export cannot proceed (unknown task or rig, bad opset, model/graph mismatch); the message says why and
    ``option`` names the CLI option to blame (``--tasks``, ``--rig``, ``--opset``, ``--batch``)."""

    def __init__(self, message: str, option: str = "--tasks"):
        super().__init__(message)
        self.option = option


def _check_opset(model: nn.Module, tasks: list[str], opset: int) -> None:
    """Refuse an opset the graph for ``tasks`` cannot be written in, naming the op and the tasks that need it,
    or one newer than the installed torch exports (``MAX_OPSET``), naming the supported range."""
    bev = [t for t in tasks if model.task_objects[t].space == "bev"]
    if bev and opset < _MIN_OPSET:
        camera = [t for t in tasks if t not in bev]
        hint = (f"; the camera-only tasks ({','.join(camera)}) alone export at opset >= {_MIN_CAMERA_OPSET}"
                if camera else "")
        raise ExportError(f"opset {opset} is too old for BEV task(s) {','.join(bev)}: camera->BEV fusion uses "
                          f"GridSample, which needs opset >= {_MIN_OPSET}{hint}", option="--opset")
    if opset < _MIN_CAMERA_OPSET:
        raise ExportError(f"opset {opset} is too old: the camera trunk and heads need opset >= {_MIN_CAMERA_OPSET}",
                          option="--opset")
    if opset > MAX_OPSET:
        low = _MIN_OPSET if bev else _MIN_CAMERA_OPSET
        raise ExportError(f"opset {opset} is too new: the installed torch {torch.__version__} exports ONNX opsets "
                          f"{low}..{MAX_OPSET} for this graph", option="--opset")


def _decoder_name(task: Any) -> str:
    """Dotted path of ``task``'s decode method (``module.Class.decode``), as recorded in the manifest."""
    cls = type(task)
    return f"{cls.__module__}.{cls.__qualname__}.decode"


class ExportGraph(nn.Module):
    """``HydraNet`` restricted to ``tasks`` with a flat tuple of outputs in ``output_keys`` order. Graphs with
    fusion take ``camera_valid`` bool ``[B, N]`` as a fourth input (a dead camera is masked in the car)."""

    def __init__(self, model: nn.Module, tasks: list[str], output_keys: list[tuple[str, str]]):
        super().__init__()
        self.model = model
        self.tasks = list(tasks)
        self.output_keys = list(output_keys)

    def forward(self, images: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor,
                camera_valid: Tensor | None = None) -> tuple[Tensor, ...]:
        """uint8 images ``[B, N, 3, H, W]``, K ``[B, N, 3, 3]`` (pixels), T_ego_from_cam ``[B, N, 4, 4]`` (metres)
        -> the task outputs as a flat tuple in ``output_keys`` order."""
        out = self.model(images, intrinsics, T_ego_from_cam, tasks=self.tasks, camera_valid=camera_valid)
        return tuple(out[t][k] for t, k in self.output_keys)


def resolve_tasks(model: nn.Module, tasks: list[str] | str | None) -> list[str]:
    """Task names (config order) from a list or ``"a,b"``; unknown names are an ``ExportError``."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if tasks is not None and not tasks:
        raise ExportError("no tasks given: pass --tasks a,b,... or omit it for every task of the model")
    try:
        return model.resolve_tasks(tasks)
    except KeyError as e:
        raise ExportError(str(e.args[0])) from None


def _resolve_rig(model: nn.Module, rig: str | None) -> str:
    """The name of the rig to export: ``rig`` if it is one of ``model.setup.rigs``, else the first; an unknown
    name is an ``ExportError`` naming the rigs (option ``--rig``)."""
    try:
        return model.setup.rig_name(rig)
    except KeyError as e:
        raise ExportError(str(e.args[0]), option="--rig") from None


def example_inputs(model: nn.Module, batch: int = 1, rig: str | None = None,
                   with_mask: bool = False) -> tuple[Tensor, ...]:
    """Inputs of the model's shape on its rig ``rig`` (default the first of ``model.setup.rigs``): uint8 images,
    the rig's K rescaled to the network input and its T_ego_from_cam (values only steer tracing, never the
    graph); ``with_mask`` adds an all-True ``camera_valid``."""
    setup = model.setup
    cams = setup.rig(_resolve_rig(model, rig))
    h, w = setup.image_size
    n = len(cams)
    images = torch.randint(0, 256, (batch, n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    K = cams.intrinsics(setup.image_size)[None].expand(batch, -1, -1, -1).contiguous()
    T = cams.extrinsics()[None].expand(batch, -1, -1, -1).contiguous()
    return (images, K, T, torch.ones(batch, n, dtype=torch.bool)) if with_mask else (images, K, T)


def _build_manifest(model: nn.Module, graph_file: str, tasks: list[str], outputs: dict[str, dict[str, Tensor]],
                   opset: int, batch: int, trunk_hash: str, checkpoint: str | None,
                   rig: str | None = None, graph_inputs: list[str] | None = None,
                   graph_sha256: str = "") -> ExportManifest:
    """The manifest of a written graph for rig ``rig`` (a name of ``model.setup.rigs``, default the first).
    ``graph_inputs``: the inputs the graph really has (the exporter drops an input nothing reads, e.g. K and T
    in a camera-only graph); None = all of ``_INPUT_NAMES``."""
    setup = model.setup.only_rig(_resolve_rig(model, rig))
    h, w = setup.image_size
    n = len(setup.rig())
    ctx = model.head_context
    out_specs, task_specs = [], {}
    for name in tasks:
        task = model.task_objects[name]
        names = []
        for key, value in outputs[name].items():
            out_specs.append(OutputSpec(name=f"{name}.{key}", task=name, key=key, shape=list(value.shape),
                                        dtype=str(value.dtype).removeprefix("torch."), decoder=_decoder_name(task)))
            names.append(f"{name}.{key}")
        task_specs[name] = ExportedTaskSpec(space=task.space, label=task.label, options=dict(task.options),
                                    decoder=_decoder_name(task), outputs=names)
    inputs = [
        InputSpec(name="images", shape=[batch, n, 3, h, w], dtype="uint8", layout="B,N,C,H,W (RGB)",
                  description="raw 8-bit camera images in camera_names order; normalised inside the graph"),
        InputSpec(name="intrinsics", shape=[batch, n, 3, 3], dtype="float32", layout="B,N,3,3",
                  description="pinhole K in pixels of the H x W image"),
        InputSpec(name="T_ego_from_cam", shape=[batch, n, 4, 4], dtype="float32", layout="B,N,4,4",
                  description="camera (OpenCV: x right, y down, z forward) -> ego (x fwd, y left, z up), metres"),
        InputSpec(name="camera_valid", shape=[batch, n], dtype="bool", layout="B,N",
                  description="False for a failed camera: fusion ignores it (BEV cells it never saw are unchanged) "
                              "and averages over the remaining cameras; all True in normal operation"),
    ]
    if graph_inputs is None:
        graph_inputs = list(_INPUT_NAMES[:3]) + (["camera_valid"] if any(
            model.task_objects[t].space == "bev" for t in tasks) else [])
    if graph_inputs is not None:
        unknown = [name for name in graph_inputs if name not in {i.name for i in inputs}]
        if unknown:
            raise ExportError(f"the traced graph has inputs {unknown} this exporter does not describe")
        inputs = [i for i in inputs if i.name in graph_inputs]
    return ExportManifest(
        graph=graph_file, graph_sha256=graph_sha256, opset=opset, hydranet_version=hydranet.__version__,
        torch_version=f"{torch.__version__} (python {platform.python_version()})", checkpoint=checkpoint,
        trunk_hash=trunk_hash, batch=batch, setup=setup, inputs=inputs,
        normalisation=Normalisation(mean=list(model.pixel_mean), std=list(model.pixel_std)), rig_note=_RIG_NOTE,
        head_context=HeadContextSpec(camera_channels=ctx.camera_channels, camera_strides=dict(ctx.camera_strides),
                                     bev_channels=ctx.bev_channels),
        tasks=task_specs, outputs=out_specs, architecture=model.cfg.model_dump(mode="json"))


@torch.no_grad()
def export_onnx(model: nn.Module, path: str | Path, tasks: list[str] | str | None = None, opset: int = DEFAULT_OPSET,
                batch: int = 1, trunk_hash: str | None = None, checkpoint: str | None = None,
                rig: str | None = None) -> ExportManifest:
    """Write ``path`` (ONNX) and ``<stem>.manifest.json`` beside it; returns the manifest.

    ``model`` is a ``HydraNet``; ``tasks`` None = all of its tasks; ``rig`` names the rig of ``model.setup``
    the graph takes (None: the first). ``trunk_hash`` defaults to the hash of the model's trunk+neck tensors
    (the same number the checkpoint records). A temporal model with a BEV task exports its streaming graph
    (``hydranet.deploy.streaming``). Raises ``ExportError`` for ``batch < 1``, an unknown task or rig or an
    opset too old for the graph or newer than the installed torch exports (``MAX_OPSET``); ``OutputError`` when
    ``path`` would replace a file that is not an earlier export (``check_graph_output``)."""
    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}", option="--batch")
    rig = _resolve_rig(model, rig)
    names = resolve_tasks(model, tasks)
    _check_opset(model, names, opset)
    path = Path(path)
    check_graph_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if trunk_hash is None:
        trunk_hash = compute_trunk_hash(model)
    was_training = model.training
    model.eval()
    try:
        with_mask = any(model.task_objects[t].space == "bev" for t in names)  # the mask acts in fusion only
        inputs = example_inputs(model, batch, rig, with_mask)
        outputs = model(*inputs[:3], tasks=names, camera_valid=inputs[3] if with_mask else None)
        # camera_valid passes through camera heads unchanged: an input, not a graph output.
        outputs = {t: {k: v for k, v in o.items() if k != "camera_valid"} for t, o in outputs.items()}
        keys = [(t, k) for t in names for k in outputs[t]]
        input_names, output_names = list(_INPUT_NAMES[:len(inputs)]), [f"{t}.{k}" for t, k in keys]
        # A temporal model with a BEV task exports its streaming graph: state and ego motion in, new state out.
        is_streaming = bool(getattr(model, "is_temporal", False)) and any(
            model.task_objects[t].space == "bev" for t in names)
        graph: nn.Module = ExportGraph(model, names, keys).eval()
        if is_streaming:
            graph = streaming.StreamingGraph(model, names, keys).eval()
            inputs = (*inputs, *streaming.example_state_inputs(model, batch))
            input_names += [*streaming.EGO_INPUTS, *streaming.state_input_names()]
            output_names += streaming.state_output_names()
        with atomic_path(path) as tmp, warnings.catch_warnings():  # no half-written graph, even on a full disk
            # Tracing warns about shape checks turned into constants: the batch and rig are fixed by design.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, inputs, str(tmp), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
            graph_inputs = [i.name for i in onnx.load(str(tmp), load_external_data=False).graph.input]
    finally:
        model.train(was_training)
    # only a streaming graph has ego-motion and state inputs (a plain graph never names them)
    streamed = set(streaming.EGO_INPUTS) | set(streaming.state_input_names()) if is_streaming else set()
    manifest = _build_manifest(model, path.name, names, outputs, opset, batch, trunk_hash, checkpoint, rig,
                              [n for n in graph_inputs if n not in streamed], file_sha256(path))
    if is_streaming:  # the ego-motion and state inputs, in the graph's order
        specs = {i.name: i for i in [*manifest.inputs, *streaming.streaming_input_specs(model, batch)]}
        manifest = manifest.model_copy(update={"inputs": [specs[n] for n in graph_inputs],
                                               "state_outputs": streaming.state_output_specs(model, batch),
                                               "rig_note": f"{manifest.rig_note} {streaming.STATE_NOTE}"})
    write_export_manifest(manifest, manifest_path(path))
    return manifest


def export_checkpoint(checkpoint: str | Path, path: str | Path, tasks: list[str] | str | None = None,
                      opset: int = DEFAULT_OPSET, batch: int = 1,
                      rig: str | None = None) -> tuple[ExportManifest, nn.Module]:
    """Load a checkpoint with ``hydranet.checkpoint.load_model`` and export it for its rig ``rig`` (a name of
    the checkpoint's ``setup.rigs``, default the first); returns the manifest and the loaded model (for
    ``--verify``). The trunk hash is the one the checkpoint recorded; a recorded hash that does not match the
    weights raises ``CheckpointError``."""
    model, ckpt = load_model(checkpoint)
    recorded = ckpt.state.get("trunk_hash")
    computed = compute_trunk_hash(model)
    if recorded is not None and recorded != computed:
        raise CheckpointError(f"{ckpt.name}: trunk hash in state.json ({recorded[:12]}) does not match the weights "
                              f"({computed[:12]}): the checkpoint is inconsistent")
    manifest = export_onnx(model, path, tasks, opset, batch, computed, str(ckpt.path), rig)
    return manifest, model
