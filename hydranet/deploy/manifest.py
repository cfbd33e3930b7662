"""The manifest written beside every exported graph: everything needed to use the graph without Python's model.

``model.onnx`` gets ``model.manifest.json`` (``model.int8.onnx`` gets ``model.int8.manifest.json``). It records
the pre-processing contract (camera order, input names, shapes, dtypes, the normalisation the graph applies
itself), the model's ``Setup`` with the one rig the graph takes (each camera's native size, K and
T_ego_from_cam; the image size, BEV grid and class vocabularies — K and T are still *inputs*, so a
recalibrated rig needs no re-export), every output's name, task, decoder and shape (a temporal graph: also
its state inputs and outputs), each task's options (decoders are pure functions of the outputs plus those
options), and the trunk hash that ties the graph to its checkpoint. ``DeployedModel``
(``hydranet.deploy.runtime``) needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from hydranet.config_errors import format_validation_error
from hydranet.geometry import BevGrid
from hydranet.outputs import OutputError, write_bytes_atomic
from hydranet.setup import Setup
from hydranet.tasks import HeadContext

FORMAT = "hydranet-deploy/2"  # 2: the Setup (full camera K and rotation, vocabularies) replaced rig + grid


class ExportManifestError(ValueError):
    """A missing, unreadable or inconsistent manifest; the message names the file."""


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or Infinity anywhere in a manifest (normalisation, K, thresholds) is an error
    # naming the field, never a value the runtime computes with.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputSpec(_Strict):
    """One graph input: ONNX name, fixed shape (e.g. ``[B, N, 3, H, W]``), numpy dtype name, axis layout, meaning."""

    name: str
    shape: list[int]
    dtype: str
    layout: str
    description: str = ""


class Normalisation(_Strict):
    """``x_float = (x_uint8 - mean) / std`` per RGB channel, in 0..255 units, applied *inside* the graph."""

    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    inside_graph: bool = True


class OutputSpec(_Strict):
    """One graph output ``<task>.<key>``: its task, the key in the task's output dict, fixed shape and dtype."""

    name: str  # "<task>.<key>", the ONNX output name
    task: str
    key: str
    shape: list[int]
    dtype: str = "float32"
    decoder: str  # dotted path of the task's decode function


class StateOutputSpec(_Strict):
    """One updated-memory output of a temporal graph, ``new_state.<name>``: fixed shape and dtype, and the
    ``state.<name>`` input the caller feeds it back into on the next frame of the same sequence."""

    name: str  # "new_state.<name>", the ONNX output name
    feeds: str  # "state.<name>", the graph input it becomes on the next call
    shape: list[int]
    dtype: str = "float32"


class ExportedTaskSpec(_Strict):
    """One exported task: camera or BEV space, its label kind, the options ``create_task`` rebuilds it from,
    its decoder's dotted path and the names of its graph outputs."""

    space: Literal["camera", "bev"]
    label: str
    options: dict[str, JsonValue]
    decoder: str
    outputs: list[str]


class HeadContextSpec(_Strict):
    """``HeadContext`` of the exported model: decoders read the feature strides from it (``bind_task``)."""

    camera_channels: int
    camera_strides: dict[str, int]
    bev_channels: int


class QuantizationSpec(_Strict):
    """How an INT8 graph was made (``hydranet.deploy.quantize``): method, calibration frames and seed,
    quantized op types, activation/weight types, the fp32 graph it came from and the nodes of a quantized
    op type that were deliberately left fp32 (``fp32_nodes``: the image stem and the output convs)."""

    method: str
    calibration_frames: int
    calibration_seed: int
    per_channel: bool
    op_types: list[str]
    activation_type: str
    weight_type: str
    source_graph: str
    fp32_nodes: list[str] = Field(default_factory=list)
    dense_nodes: list[str] = Field(default_factory=list)


class ExportManifest(_Strict):
    """Everything needed to run and decode an exported graph without the Python model (module docstring).

    Strict (unknown fields are refused); ``load_manifest`` reads and checks one, ``write_export_manifest`` writes one.
    """

    format: str = FORMAT
    graph: str  # file name of the ONNX graph, beside the manifest
    graph_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the graph's bytes; DeployedModel refuses others
    opset: int
    hydranet_version: str
    torch_version: str
    checkpoint: str | None = None
    trunk_hash: str
    batch: int = Field(ge=1)
    setup: Setup  # the model's setup with the one rig the graph takes (camera order, K, T, sizes, grid, classes)
    inputs: list[InputSpec]
    normalisation: Normalisation
    rig_note: str
    head_context: HeadContextSpec
    tasks: dict[str, ExportedTaskSpec]
    outputs: list[OutputSpec]
    # A temporal graph's new_state.* outputs, in graph order after ``outputs`` (empty for a single-frame graph).
    state_outputs: list[StateOutputSpec] = Field(default_factory=list)
    architecture: dict[str, JsonValue] = Field(default_factory=dict)  # the ModelConfig, for the record
    quantization: QuantizationSpec | None = None

    @model_validator(mode="after")
    def _one_rig(self) -> ExportManifest:
        if len(self.setup.rigs) != 1:
            raise ValueError(f"setup.rigs: a graph takes one rig, the manifest lists {self.setup.rig_names()}")
        return self

    # ---- derived ---------------------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        """The graph's cameras, in input order (its rig's)."""
        return list(self.setup.rig().names)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every camera image the graph takes."""
        return tuple(self.setup.image_size)  # type: ignore[return-value]

    @property
    def bev_grid(self) -> BevGrid | None:
        """The BEV grid (ego frame, metres) the weights were trained for."""
        return self.setup.grid

    @property
    def num_cameras(self) -> int:
        """Number of cameras N the graph takes, in ``camera_names`` order."""
        return len(self.setup.rig())

    def head_ctx(self) -> HeadContext:
        """The exported model's ``HeadContext`` (strides, channels): what ``bind_task`` builds decoders from."""
        h = self.head_context
        return HeadContext(camera_channels=h.camera_channels, camera_strides=dict(h.camera_strides),
                           bev_channels=h.bev_channels)

    def input_names(self) -> list[str]:
        """ONNX input names in graph order."""
        return [i.name for i in self.inputs]

    @property
    def is_temporal(self) -> bool:
        """Whether the graph streams: it takes the video memory's state (``state.*`` inputs) and returns the next."""
        return any(i.name.startswith("state.") for i in self.inputs)

    def output_names(self) -> list[str]:
        """ONNX task output names ``<task>.<key>`` in graph order (a temporal graph's ``new_state.*`` outputs
        follow them: ``state_outputs``)."""
        return [o.name for o in self.outputs]

    def to_json(self) -> str:
        """The manifest as indented JSON text (what ``write_export_manifest`` stores)."""
        return json.dumps(self.model_dump(), indent=1)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the graph's, recorded in and checked against the manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(graph: str | Path) -> Path:
    """``model.onnx`` -> ``model.manifest.json`` (beside the graph)."""
    graph = Path(graph)
    return graph.with_name(f"{graph.stem}.manifest.json")


def check_graph_output(path: str | Path) -> None:
    """Refuse to write a graph at ``path`` where it would replace a file hydranet did not write.

    A graph is ``NAME.onnx`` with ``NAME.manifest.json`` beside it. An existing file at either path may be replaced
    only when it is an earlier export: a manifest of any ``hydranet-deploy/`` format that names ``NAME.onnx`` as its
    graph. Raises ``OutputError`` (naming the file) for another suffix, a directory, or a file of any other kind
    (a dataset's ``manifest.json``, a run's ``config.yaml``, a user's index), before anything is written."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise OutputError(f"{path}: a graph is written as NAME.onnx, with NAME.manifest.json beside it; choose an "
                          "--out ending in .onnx")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; --out names the graph file (NAME.onnx)")
    manifest = manifest_path(path)
    earlier = None
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError, RecursionError):
            data = None
        if not (isinstance(data, dict) and str(data.get("format", "")).startswith("hydranet-deploy/")):
            raise OutputError(f"{manifest} exists and is not a graph manifest hydranet wrote: exporting to {path} "
                              "would replace it; choose another --out")
        earlier = data.get("graph")
    if path.exists() and earlier != path.name:
        raise OutputError(f"{path} exists and is not a graph hydranet exported (no {manifest.name} beside it "
                          "naming it): hydranet replaces only its own earlier graph; choose another --out")


def write_export_manifest(manifest: ExportManifest, path: str | Path) -> Path:
    """Write ``manifest`` atomically (temporary file, then rename) to ``path``; returns ``path``."""
    path = Path(path)
    write_bytes_atomic(path, manifest.to_json().encode())
    return path


def load_manifest(path: str | Path) -> ExportManifest:
    """Read and validate a manifest; a graph path (``.onnx``) finds its manifest beside it.

    Raises ``ExportManifestError`` naming the file when it is missing, not JSON, of another format, fails
    validation (the message lists each field), or lists task outputs the graph does not have."""
    path = Path(path)
    if path.suffix == ".onnx":
        path = manifest_path(path)
    if not path.is_file():
        raise ExportManifestError(f"{path}: manifest not found (export writes it beside the graph as "
                                  "<name>.manifest.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise ExportManifestError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ExportManifestError(f"{path}: unknown manifest format {got!r}, expected {FORMAT!r}")
    try:
        manifest = ExportManifest.model_validate(data)
    except ValidationError as e:
        raise ExportManifestError(f"{path}: invalid manifest ({format_validation_error(e, '', sep='; ')})") from None
    for name, spec in manifest.tasks.items():
        missing = [o for o in spec.outputs if o not in manifest.output_names()]
        if missing:
            raise ExportManifestError(f"{path}: tasks.{name}.outputs lists {missing}, which are not graph outputs")
    return manifest
