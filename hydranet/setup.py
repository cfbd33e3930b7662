"""``Setup``: the geometry and vocabularies a model is built for, declared once and carried everywhere.

A ``Setup`` holds

- ``image_size`` (H, W): the network input. Every camera is resized to it by its source; resizing
  rescales K (``K' = diag(W/w, H/h, 1) K``) and nothing else, so cameras of different native
  resolutions share one rig.
- ``rigs``: named rigs, in order (the first is the default: what the world renders, what export writes).
  A ``Rig`` is a ``name`` and ordered ``Camera``\\s; a camera has a ``name``, its native ``image_size``,
  ``K`` as ``fx, fy, cx, cy`` (pixels at that size) and ``T_ego_from_cam`` (4x4, full rotation: OpenCV
  camera -> ego frame, metres). A model trained on several rigs (the synthetic world, nuScenes, a fleet)
  lists each; export writes the one named.
- ``grid``: the ``BevGrid`` of every BEV label and output (None for data with no BEV labels).
- ``classes``: label -> class vocabulary (``objects3d`` and ``detection2d``: ``OBJECT_CLASSES``, the
  world's five, unless a config names others, e.g. ``nuscenes``' ten detection classes).

Where it lives: the training config's ``model.setup`` (``ModelConfig.setup``); every checkpoint and
every export manifest carry it; every source reports its own (``Source.setup``); the synthetic world
renders the one it is given. ``check_fits`` is the one comparison of a data setup with a model's.

Config shorthand (resolved once, on validation, into the explicit form above): ``rigs`` may be a mapping
``{name: rig}`` (its order kept); a rig may be the word ``default`` (the 8-camera sedan rig of
``_DEFAULT_CAMERAS`` at the setup's image size) or a list of cameras; a camera may give
``hfov_deg`` (square pixels, centred principal point) instead of ``fx, fy, cx, cy``, ``K`` (3x3) instead
of them, and ``position`` + ``yaw_deg``/``pitch_deg``/``roll_deg`` (``hydranet.geometry.camera_extrinsics``)
instead of ``T_ego_from_cam``; a camera without ``image_size`` takes the setup's.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Annotated, Any

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import Tensor

from hydranet.geometry import BevGrid, camera_extrinsics, check_intrinsics, check_principal_point

__all__ = ["Camera", "ImageSize", "NUSCENES_CLASSES", "OBJECT_CLASSES", "OBJECT_LABELS", "Rig", "Setup",
           "SetupMismatchError", "VOCABULARIES", "check_fits", "check_grid", "check_vocabularies", "class_names",
           "rig_of_frame"]

# The synthetic world's object classes: the default vocabulary of detection2d and objects3d.
OBJECT_CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cone", "traffic_light")
# nuScenes' ten detection classes (nuscenes-devkit ``DETECTION_NAMES``), in the devkit's order.
NUSCENES_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                     "motorcycle", "bicycle", "traffic_cone", "barrier")
# Named vocabularies a config may give instead of a list (``classes: {objects3d: nuscenes}``).
VOCABULARIES: dict[str, tuple[str, ...]] = {"world": OBJECT_CLASSES, "nuscenes": NUSCENES_CLASSES}
# Labels whose class vocabulary a setup declares.
OBJECT_LABELS: tuple[str, ...] = ("detection2d", "objects3d")

# (name, hfov deg, ego position m, yaw deg left of forward, pitch deg down) of the 8-camera sedan rig
# (rear axle at the origin, wheelbase 2.9 m): three forward cameras behind the windshield, B-pillar
# cameras looking side-forward, repeaters on the front fenders looking back, a rear camera above the plate.
_DEFAULT_CAMERAS: tuple[tuple[str, float, tuple[float, float, float], float, float], ...] = (
    ("main", 50.0, (1.60, 0.00, 1.40), 0.0, 2.0),
    ("narrow", 35.0, (1.60, 0.05, 1.40), 0.0, 1.0),
    ("wide", 120.0, (1.60, -0.05, 1.40), 0.0, 4.0),
    ("left_pillar", 90.0, (1.10, 0.85, 1.25), 60.0, 5.0),
    ("right_pillar", 90.0, (1.10, -0.85, 1.25), -60.0, 5.0),
    ("left_repeater", 80.0, (2.30, 0.95, 0.95), 140.0, 5.0),
    ("right_repeater", 80.0, (2.30, -0.95, 0.95), -140.0, 5.0),
    ("rear", 110.0, (-0.90, 0.00, 1.05), 180.0, 12.0),
)

def _check_image_size(v: tuple[int, int]) -> tuple[int, int]:
    # Any image (a camera's native size, a source's output, a rendered frame): data is resized to a model's input.
    # A network input's own minimum, the neck's coarsest stride, is hydranet.model's min_image_side (ModelConfig
    # checks a model's setup.image_size against it before this check runs).
    if min(v) < 8:
        raise ValueError(f"image_size {v} is too small (H, W pixels, at least 8)")
    return v


def _pixel_counts(v: Any) -> Any:
    """``v`` unchanged when it is an image size's ``[H, W]``, else ``ValueError``: not two values, or a YAML
    true/false among them (pydantic's lax mode would read ``[true, 64]`` as (1, 64))."""
    if not isinstance(v, list | tuple) or len(v) != 2 or any(isinstance(x, bool) for x in v):
        raise ValueError(f"expected [H, W] (two pixel counts), got {v!r}")
    return v


# An image size (H, W) in pixels: a camera's native size, a network input, a source's output size.
ImageSize = Annotated[tuple[int, int], BeforeValidator(_pixel_counts), AfterValidator(_check_image_size)]
Matrix4 = tuple[tuple[float, float, float, float], tuple[float, float, float, float],
                tuple[float, float, float, float], tuple[float, float, float, float]]


class SetupMismatchError(ValueError):
    """Data whose setup the model was not built for (image size, rig, BEV grid or class vocabulary); the
    message names the data source, the field and both values."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _number(value: Any, field: str) -> float:
    """``value`` as a finite float, or ``ValueError`` naming ``field`` (a string, a list or NaN is no angle)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return number


def _explicit_camera(data: dict[str, Any]) -> dict[str, Any]:
    """A camera's fields with the shorthand (``hfov_deg``, ``K``, ``position`` + angles) made explicit."""
    size = data.get("image_size")
    if "hfov_deg" in data:
        hfov = float(data.pop("hfov_deg"))
        if not 0.0 < hfov < 180.0 or size is None:
            raise ValueError(f"hfov_deg must be in (0, 180) and needs image_size, got {hfov}, {size}")
        h, w = size
        f = (w / 2.0) / math.tan(math.radians(hfov) / 2.0)  # hydranet.geometry.intrinsics_from_fov
        data.update(fx=f, fy=f, cx=w / 2.0, cy=h / 2.0)
    if "K" in data:
        K = [[float(v) for v in row] for row in data.pop("K")]
        if len(K) != 3 or any(len(r) != 3 for r in K):
            raise ValueError(f"K must be a 3x3 matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K}")
        check_intrinsics(K, "K")
        data.update(fx=K[0][0], fy=K[1][1], cx=K[0][2], cy=K[1][2])
    angles = {k: _number(data.pop(k), k) for k in ("yaw_deg", "pitch_deg", "roll_deg") if k in data}
    if "position" in data:
        position = data.pop("position")
        if isinstance(position, str | bytes) or not isinstance(position, list | tuple) or len(position) != 3:
            raise ValueError(f"position must be [x, y, z] (metres, ego frame), got {position!r}")
        T = camera_extrinsics(tuple(_number(p, "position") for p in position), angles.get("yaw_deg", 0.0),
                              angles.get("pitch_deg", 0.0), angles.get("roll_deg", 0.0))
        data["T_ego_from_cam"] = T.tolist()
    elif angles:
        raise ValueError("yaw_deg/pitch_deg/roll_deg need position (metres, ego frame)")
    return data


def _unique_names(names: list[str], what: str) -> None:
    """``ValueError`` naming the repeated ones unless ``names`` are unique (``what`` says whose)."""
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} must be unique, repeated: {dup}")


class Camera(_Frozen):
    """One camera: ``name``, native ``image_size`` (H, W) pixels, pinhole ``fx, fy, cx, cy`` (pixels at that
    size) and ``T_ego_from_cam`` (4x4, OpenCV camera x right / y down / z forward -> ego x forward / y left /
    z up, metres). Shorthand inputs and their resolution: the module docstring. Validation raises
    ``ValueError`` for a name with ``/ \\ .``, fx or fy <= 0, a skewed K, a principal point outside
    ``image_size`` (``hydranet.geometry.check_principal_point``), a ``position`` that is not three numbers, an
    angle that is no number, or a T that is not rigid."""

    name: str = Field(min_length=1)
    image_size: ImageSize
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    T_ego_from_cam: Matrix4

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _explicit_camera(dict(data)) if isinstance(data, dict) else data

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or "." in v or v.strip() != v:
            raise ValueError(f"camera name {v!r} may not contain '/', '\\\\', '.' or surrounding spaces")
        return v

    @model_validator(mode="after")
    def _principal_point_inside(self) -> Camera:
        # The data readers' check: outside, K is almost always one for another resolution, and the model would
        # refuse it at its first frame.
        check_principal_point(self.K(), self.image_size, f"camera {self.name!r}: K at its image_size")
        return self

    @field_validator("T_ego_from_cam")
    @classmethod
    def _rigid(cls, v: Matrix4) -> Matrix4:
        T = torch.tensor(v, dtype=torch.float64)
        R = T[:3, :3]
        orthonormal = torch.allclose(R @ R.T, torch.eye(3, dtype=R.dtype), atol=1e-5) and float(torch.linalg.det(R)) > 0
        if T[3].tolist() != [0.0, 0.0, 0.0, 1.0] or not orthonormal:
            raise ValueError("T_ego_from_cam is not a rigid transform (rotation orthonormal with det +1, "
                             "last row 0 0 0 1)")
        return v

    def K(self, image_size: tuple[int, int] | None = None) -> Tensor:
        """Pinhole K ``[3, 3]`` float64 in pixels of ``image_size`` (H, W; default the camera's own size):
        ``diag(W/w, H/h, 1) @ K``, the only geometry that changes with the image size."""
        K = torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        if image_size is None or tuple(image_size) == tuple(self.image_size):
            return K
        (h, w), (h0, w0) = image_size, self.image_size
        return torch.tensor([[w / w0, 0.0, 0.0], [0.0, h / h0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64) @ K

    def T(self) -> Tensor:
        """``T_ego_from_cam`` ``[4, 4]`` float64."""
        return torch.tensor(self.T_ego_from_cam, dtype=torch.float64)


class Rig(_Frozen):
    """A named rig: ordered, named cameras; camera order in tensors is this order. ``ValueError`` for repeated
    camera names."""

    name: str = Field("default", min_length=1)
    cameras: tuple[Camera, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Rig:
        _unique_names([c.name for c in self.cameras], "camera names")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Camera names in tensor order."""
        return tuple(c.name for c in self.cameras)

    def __len__(self) -> int:
        return len(self.cameras)

    def intrinsics(self, image_size: tuple[int, int] | None = None) -> Tensor:
        """K per camera ``[N, 3, 3]`` float32, pixels of ``image_size`` (H, W), each camera rescaled from its own
        size (None: every camera at its own size)."""
        return torch.stack([c.K(image_size) for c in self.cameras]).float()

    def extrinsics(self) -> Tensor:
        """``T_ego_from_cam`` per camera ``[N, 4, 4]`` float32: OpenCV camera frame to ego frame, metres."""
        return torch.stack([c.T() for c in self.cameras]).float()

    def describe(self) -> str:
        """``8 cameras [main, ...]``, with the native sizes when they differ from each other."""
        sizes = sorted({tuple(c.image_size) for c in self.cameras})
        size = "" if len(sizes) == 1 else " native sizes " + ", ".join(f"{h}x{w}" for h, w in sizes)
        return f"{len(self)} cameras {list(self.names)}{size}"


def default_rig(image_size: tuple[int, int] = (128, 256), name: str = "default") -> Rig:
    """The 8-camera sedan rig (``_DEFAULT_CAMERAS``) named ``name``, with K at ``image_size`` (H, W) pixels."""
    h, w = (int(v) for v in image_size)
    return Rig(name=name, cameras=tuple(
        Camera(name=name, image_size=(h, w), hfov_deg=hfov, position=position, yaw_deg=yaw, pitch_deg=pitch)
        for name, hfov, position, yaw, pitch in _DEFAULT_CAMERAS))


def rig_of_frame(name: str, names: tuple[str, ...], intrinsics: Tensor, T_ego_from_cam: Tensor,
                 image_sizes: list[tuple[int, int]]) -> Rig:
    """The ``Rig`` ``name`` of one frame: camera ``names``, K ``[N, 3, 3]`` (pixels at ``image_sizes[i]`` = (H, W))
    and ``T_ego_from_cam`` ``[N, 4, 4]``, as a source reports the rig its frames come from."""
    cams = []
    for name, K, T, size in zip(names, intrinsics.double(), T_ego_from_cam.double(), image_sizes, strict=True):
        cams.append(Camera(name=name, image_size=tuple(int(v) for v in size), fx=float(K[0, 0]), fy=float(K[1, 1]),
                           cx=float(K[0, 2]), cy=float(K[1, 2]), T_ego_from_cam=T.tolist()))
    return Rig(name=name, cameras=tuple(cams))


def _named(name: str, rig: Any) -> Any:
    """One entry of a ``{name: rig}`` mapping as a named rig (``default``, a camera list, a rig dict or ``Rig``)."""
    if isinstance(rig, Rig):
        return rig.model_copy(update={"name": name})
    if rig == "default":
        return {"name": name, "cameras": "default"}
    if isinstance(rig, list):
        return {"name": name, "cameras": rig}
    return {**rig, "name": name} if isinstance(rig, dict) else rig


def _vocabulary(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        if v not in VOCABULARIES:
            raise ValueError(f"unknown vocabulary '{v}'; named ones: {sorted(VOCABULARIES)} (or a list of names)")
        return VOCABULARIES[v]
    names = tuple(str(c) for c in v)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"a class vocabulary must be non-empty with unique names, got {list(names)}")
    return names


class Setup(_Frozen):
    """The geometry and class vocabularies a model is built for (module docstring). ``rigs`` left out = the
    ``default`` rig at ``image_size``. Frozen; compared by value; ``Setup.model_validate(dict)`` reads the
    config/JSON form and raises ``ValueError`` naming the field (a repeated rig name included)."""

    image_size: ImageSize = (128, 256)  # (H, W) network input, pixels
    rigs: tuple[Rig, ...] = ()
    grid: BevGrid | None = Field(default_factory=BevGrid)
    classes: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {label: OBJECT_CLASSES for label in OBJECT_LABELS})

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        size = data.get("image_size", cls.model_fields["image_size"].default)
        try:  # the rigs below are sized by it: a malformed one is named first, at the field
            size = tuple(_pixel_counts(size))
        except ValueError as e:
            raise ValidationError.from_exception_data("Setup", [InitErrorDetails(
                type=PydanticCustomError("value_error", str(e)), loc=("image_size",), input=size)]) from None
        rigs = data.get("rigs")
        if isinstance(rigs, dict):  # {name: rig}: a list in that order
            rigs = [_named(name, rig) for name, rig in rigs.items()]
        if isinstance(rigs, list | tuple):
            out = []
            for rig in rigs:
                if rig == "default":
                    rig = default_rig(size)
                elif isinstance(rig, dict) and rig.get("cameras") == "default":
                    rig = default_rig(size, rig.get("name", "default"))
                elif isinstance(rig, dict):
                    rig = {**rig, "cameras": [c if not isinstance(c, dict) or "image_size" in c
                                              else {**c, "image_size": size} for c in rig.get("cameras", [])]}
                out.append(rig)
            data["rigs"] = out
        if isinstance(data.get("classes"), dict):
            data["classes"] = {k: _vocabulary(v) for k, v in data["classes"].items()}
        return data

    @model_validator(mode="after")
    def _default_rig(self) -> Setup:
        _unique_names([r.name for r in self.rigs], "rigs: names")
        if not self.rigs:  # not in model_fields_set: a dump with exclude_unset leaves it out
            object.__setattr__(self, "rigs", (default_rig(self.image_size),))
        return self

    def rig_names(self) -> list[str]:
        """The rigs' names, in order."""
        return [r.name for r in self.rigs]

    def rig_name(self, name: str | None = None) -> str:
        """``name`` if it names one of ``rigs``, the first rig's name for None; ``KeyError`` naming the rigs."""
        if name is None:
            return self.rigs[0].name
        if name not in self.rig_names():
            raise KeyError(f"no rig '{name}' in the setup (rigs: {self.rig_names()})")
        return name

    def rig(self, name: str | None = None) -> Rig:
        """The rig ``name`` (default: the first); ``KeyError`` naming the rigs."""
        name = self.rig_name(name)
        return next(r for r in self.rigs if r.name == name)

    def only_rig(self, name: str | None = None) -> Setup:
        """This setup with the one rig ``name`` (default: the first): what an exported graph takes."""
        return self.model_copy(update={"rigs": (self.rig(name),)})

    def camera_counts(self) -> tuple[int, ...]:
        """Camera counts of the rigs, first rig first, without repeats."""
        return tuple(dict.fromkeys(len(r) for r in self.rigs))

    def find_rig(self, names: tuple[str, ...]) -> str | None:
        """The name of the rig whose cameras are ``names`` (in order), or None."""
        return next((r.name for r in self.rigs if r.names == tuple(names)), None)

    def vocabulary(self, label: str) -> tuple[str, ...] | None:
        """The class vocabulary of ``label`` (``classes[label]``), None when the setup declares none."""
        return self.classes.get(label)


def class_names(setup: Setup | None, label: str) -> tuple[str, ...]:
    """The class names ``label``'s class ids index: ``setup``'s vocabulary, else the world's five
    (``OBJECT_CLASSES``; also for ``setup`` None)."""
    return (setup.vocabulary(label) if setup is not None else None) or OBJECT_CLASSES


def check_fits(data: Setup, model: Setup, source: str, *, labels: Collection[str] = (),
               grid_tasks: Collection[str] = (), remedy: str = "", model_name: str = "the model") -> None:
    """Raise ``SetupMismatchError`` unless frames of setup ``data`` can train or test a model of setup ``model``.

    The one data-vs-model check (``train``, ``train --from``, ``cache-features``, ``eval``, ``generate``, ``infer``
    and ``vacation``'s pre-flight call it before a frame is read): image size equal; every rig of the data has the
    cameras (names, in order) of one of the model's rigs — K and T may differ, they are inputs per frame;
    the BEV grid equal when the data's labels of ``grid_tasks`` lie on it (``check_grid``: the tasks
    ``hydranet.tasks.grid_raster_tasks`` names, such as ``bev_semantic``; ``objects3d``'s boxes are in metres and
    fit any grid); the class vocabulary of every label in ``labels`` (the model's) that the data declares equal,
    class ids meaning the same classes. ``source`` names the data in the message, ``remedy`` what to do instead
    of a grid the tasks cannot use."""
    if tuple(data.image_size) != tuple(model.image_size):
        raise SetupMismatchError(f"{source}: images are {data.image_size[0]}x{data.image_size[1]} (HxW) but "
                                 f"{model_name} is built for {model.image_size[0]}x{model.image_size[1]} "
                                 "(setup.image_size)")
    for rig in data.rigs:
        if model.find_rig(rig.names) is None:
            known = "; ".join(f"{r.name}: {list(r.names)}" for r in model.rigs)
            raise SetupMismatchError(f"{source}: rig '{rig.name}' has {len(rig)} cameras {list(rig.names)} but "
                                     f"{model_name} takes the rigs {known} (setup.rigs)")
    check_grid(data, model, source, grid_tasks, remedy, model_name)
    check_vocabularies(data, model, labels, source, model_name)


def check_grid(data: Setup, model: Setup, source: str, tasks: Collection[str], remedy: str = "",
               model_name: str = "the model") -> None:
    """Raise ``SetupMismatchError`` naming ``source`` when ``data``'s BEV grid differs from ``model``'s and
    ``tasks`` -- the tasks whose labels lie on the grid (``hydranet.tasks.grid_raster_tasks``) -- need it; the
    message names them and ``remedy``, what to do instead. No such task, or a setup without a grid: nothing to
    check (3D boxes are in metres and fit any grid)."""
    if not tasks or data.grid is None or model.grid is None or data.grid == model.grid:
        return
    raise SetupMismatchError(f"{source}: BEV grid is {data.grid.describe()} but {model_name} uses "
                             f"{model.grid.describe()} (setup.grid): the labels of {', '.join(tasks)} lie on the "
                             f"grid{'; ' + remedy if remedy else ''}")


def check_vocabularies(data: Setup, model: Setup, labels: Collection[str], source: str,
                       model_name: str = "the model") -> None:
    """Raise ``SetupMismatchError`` naming ``source`` when a label of ``labels`` has a class vocabulary in both
    ``data`` and ``model`` and the two differ: its class ids would mean other classes (``check_fits``; the labels
    ``predict --ground-truth`` draws). A setup that declares no vocabulary for a label passes."""
    for label in labels:
        have, want = data.vocabulary(label), model.vocabulary(label)
        if have is not None and want is not None and tuple(have) != tuple(want):
            raise SetupMismatchError(f"{source}: {label} classes are {list(have)} but {model_name}'s are "
                                     f"{list(want)} (setup.classes.{label})")
