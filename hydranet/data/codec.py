"""Encode one ``Sample`` to named byte members (the WebDataset layout) and decode it back, bit-exactly.

A sample becomes these members (``<key>.<member>`` inside a shard, see ``shards.py``):

  ``sample.json``       geometry and bookkeeping: ``scene_id``, ``frame_index``, ``timestamp``,
                        ``camera_names``, ``intrinsics``, ``T_ego_from_cam``, ``T_world_from_ego``
                        (nested lists + dtype), and ``labels``: ``{name: {"member", "shape", "dtype"}}``
  ``cam.<name>.npz``    one image per camera, in rig order: entry ``image`` uint8 ``[3, H, W]``
                        (``image_format="npz"``, the default), or ``cam.<name>.png``, an RGB PNG
                        (``image_format="png"``), or ``cam.<name>.jpg``, an RGB JPEG (``image_format=
                        "jpeg"``: real camera data, 5-10x smaller, lossy at ``JPEG_QUALITY``);
                        ``sample.json`` records which. Labels are always lossless npz.
  ``<label>.npz``       dense labels (``drivable``, ``lanes``, ``depth``, ``semantic``, ``instance``,
                        ``bev_semantic``, ``ego_path``): deflated npz, see ``encode_array``
  ``<label>.npz``       ragged labels (``detection2d``, ``traffic_light``, ``objects3d``, ``lane_lines``):
                        one npz entry per field, exactly the tensors of the label dict

The byte encodings of single arrays (the deterministic npz writer and fast reader, the packed /
shuffled / narrowed dense-array encoding, PNG and JPEG) and why they were chosen are in
``array_codec.py``; this module re-exports them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    NonNegativeInt,
    PositiveInt,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from hydranet.data.array_codec import (
    CodecError,
    decode_array,
    decode_png,
    encode_array,
    encode_jpeg,
    encode_png,
    read_npz,
    write_npz,
)
from hydranet.data.labels import known_labels
from hydranet.data.sample import Sample

_IMAGE_LEVEL = 1  # deflate level for npz images: sensor noise makes higher levels <1% smaller, 3x slower
IMAGE_FORMATS = ("npz", "png", "jpeg")
_IMAGE_EXT = {"npz": "npz", "png": "png", "jpeg": "jpg"}


_GEOMETRY = ("intrinsics", "T_ego_from_cam", "T_world_from_ego")


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    # float32 -> Python float is exact and JSON keeps repr round-trip digits, so this is bit-exact.
    return {"dtype": str(t.dtype).removeprefix("torch."), "data": t.tolist()}


class _TensorRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "float64"]
    data: list[Any]

    def tensor(self, field: str) -> torch.Tensor:
        try:
            t = torch.tensor(self.data, dtype=getattr(torch, self.dtype))
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise CodecError(f"member 'sample.json': field '{field}' is not a numeric array ({e})") from e
        if not torch.isfinite(t).all():
            raise CodecError(f"member 'sample.json': field '{field}' holds non-finite values")
        return t


class _LabelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member: StrictStr = Field(min_length=1)
    kind: Literal["ragged", "dense"]
    shape: list[NonNegativeInt] | None = None  # dense only
    dtype: StrictStr | None = None  # dense only


class SampleMeta(BaseModel):
    """``sample.json``, typed: every field a reader relies on is checked here, so a malformed sample fails in
    the reader (and ``data-info --verify --deep``), naming the field, instead of later in ``collate``."""

    model_config = ConfigDict(extra="forbid")

    scene_id: StrictStr = Field(min_length=1)
    frame_index: StrictInt = Field(ge=0)
    timestamp: FiniteFloat
    camera_names: list[StrictStr] = Field(min_length=1)
    image_size: tuple[PositiveInt, PositiveInt]
    image_format: Literal["npz", "png", "jpeg"] = "npz"
    intrinsics: _TensorRecord
    T_ego_from_cam: _TensorRecord
    T_world_from_ego: _TensorRecord
    labels: dict[str, _LabelRecord]

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: dict[str, _LabelRecord]) -> dict[str, _LabelRecord]:
        known = known_labels()  # the label registry: tasks declare the labels they consume
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown label(s) {unknown} (known: {sorted(known)})")
        return v


def parse_sample_meta(data: bytes) -> SampleMeta:
    """Validate ``sample.json`` bytes; ``CodecError`` names the first bad fields."""
    try:
        return SampleMeta.model_validate_json(data)
    except ValidationError as e:
        problems = "; ".join(f"field '{'.'.join(str(x) for x in err['loc']) or '(root)'}': {err['msg']}"
                             for err in e.errors()[:3])
        raise CodecError(f"member 'sample.json' is malformed: {problems}") from None


def encode_sample(sample: Sample, image_format: str = "npz",
                  label_formats: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    """Members ``(name, bytes)`` of one sample, ``sample.json`` first. Raises ``CodecError`` naming the
    label or field that cannot be stored.

    ``label_formats``: label -> ``"png"`` stores that dense uint8 label as a grey PNG (``[..., H, W]``
    stacked to ``[prod(...) * H, W]``; viewable with any image tool, lossless) instead of npz; other
    labels are npz. A label that is not a uint8 map cannot be PNG (``CodecError`` names it)."""
    label_formats = label_formats or {}
    if image_format not in IMAGE_FORMATS:
        raise CodecError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    try:
        sample.validate()
    except ValueError as e:
        raise CodecError(str(e)) from e
    members: list[tuple[str, bytes]] = []
    images = sample.images.detach().cpu().contiguous().numpy()
    for name, img in zip(sample.camera_names, images, strict=True):
        if "/" in name or not name:
            raise CodecError(f"camera name {name!r} cannot be a member name")
        if image_format == "npz":
            members.append((f"cam.{name}.npz", write_npz({"image": img}, level=_IMAGE_LEVEL)))
        elif image_format == "png":
            members.append((f"cam.{name}.png", encode_png(img.transpose(1, 2, 0))))
        else:
            members.append((f"cam.{name}.jpg", encode_jpeg(img.transpose(1, 2, 0))))
    index: dict[str, dict[str, Any]] = {}
    for label in sorted(sample.labels):
        member, data, index[label] = _encode_label(label, sample.labels[label], label_formats.get(label, "npz"))
        members.append((member, data))
    meta = {
        "scene_id": str(sample.scene_id),
        "frame_index": int(sample.frame_index),
        "timestamp": float(sample.timestamp),
        "camera_names": list(sample.camera_names),
        "image_size": list(sample.images.shape[-2:]),
        "image_format": image_format,
        **{g: _tensor_json(getattr(sample, g)) for g in _GEOMETRY},
        "labels": index,
    }
    return [("sample.json", json.dumps(meta, separators=(",", ":")).encode())] + members


def _encode_label(label: str, value: Any, fmt: str) -> tuple[str, bytes, dict[str, Any]]:
    """One label -> (member name, bytes, its ``sample.json`` record); ``fmt`` is ``npz`` or ``png``."""
    if isinstance(value, dict):
        arrays = {}
        for field, t in value.items():
            if not isinstance(t, torch.Tensor):
                raise CodecError(f"label '{label}' field '{field}' is {type(t).__name__}, expected a tensor")
            arrays[field] = t.detach().cpu().numpy()
        return f"{label}.npz", write_npz(arrays), {"member": f"{label}.npz", "kind": "ragged"}
    if not isinstance(value, torch.Tensor):
        raise CodecError(f"label '{label}' is {type(value).__name__}; labels are tensors or dicts of tensors")
    a = value.detach().cpu().contiguous().numpy()
    if fmt == "png":
        if a.dtype != np.uint8 or a.ndim < 2:
            raise CodecError(f"label '{label}' is {a.dtype} {list(a.shape)}: only uint8 maps can be PNG")
        member, data = f"{label}.png", encode_png(a.reshape(-1, a.shape[-1]))
    elif fmt == "npz":
        member, data = f"{label}.npz", write_npz(encode_array(a))
    else:
        raise CodecError(f"label '{label}': format must be npz or png, got {fmt!r}")
    return member, data, {"member": member, "kind": "dense", "shape": list(a.shape),
                          "dtype": str(value.dtype).removeprefix("torch.")}


def decode_sample(members: dict[str, bytes], labels: frozenset[str] | set[str] | None = None) -> Sample:
    """Inverse of ``encode_sample``. ``labels`` restricts which labels are decoded (None = all stored).

    Raises ``CodecError`` naming the member that is missing or cannot be decoded."""
    if "sample.json" not in members:
        raise CodecError(f"member 'sample.json' is missing (present: {sorted(members)})")
    meta = parse_sample_meta(members["sample.json"])
    names, size, fmt = tuple(meta.camera_names), tuple(meta.image_size), meta.image_format
    geometry = {g: getattr(meta, g).tensor(g) for g in _GEOMETRY}
    planes = []
    for n in names:
        member = f"cam.{n}.{_IMAGE_EXT[fmt]}"
        img = _decode_member(member, members, _decode_image if fmt == "npz" else
                             lambda b: decode_png(b, "RGB").transpose(2, 0, 1))
        if img.shape[1:] != size:
            raise CodecError(f"member '{member}' is {img.shape[1]}x{img.shape[2]}, sample.json says "
                             f"{size[0]}x{size[1]}")
        planes.append(img)
    images = torch.from_numpy(np.stack(planes))  # stack copies: the result owns contiguous memory
    out: dict[str, Any] = {}
    for label, rec in meta.labels.items():
        if labels is not None and label not in labels:
            continue
        try:
            out[label] = _decode_member(rec.member, members, lambda b, rec=rec: _decode_label(rec, b))
        except CodecError as e:
            raise CodecError(f"label '{label}': {e}") from e
    sample = Sample(images=images, camera_names=names, scene_id=meta.scene_id, frame_index=meta.frame_index,
                    timestamp=meta.timestamp, labels=out, **geometry)
    try:
        sample.validate("sample.json")
    except ValueError as e:
        raise CodecError(str(e)) from e
    return sample


def _decode_label(rec: _LabelRecord, data: bytes) -> torch.Tensor | dict[str, torch.Tensor]:
    if rec.kind == "ragged":
        return {k: torch.from_numpy(v) for k, v in read_npz(data).items()}
    if rec.shape is None or rec.dtype is None:
        raise CodecError("sample.json gives no shape/dtype for this dense label")
    if rec.member.endswith(".png"):  # a uint8 map stored as a grey PNG (encode_sample label_formats)
        grey = decode_png(data, "L")
        if rec.dtype != "uint8" or grey.size != int(np.prod(rec.shape)):
            raise CodecError(f"PNG is {list(grey.shape)}, sample.json says {rec.dtype} {rec.shape}")
        return torch.from_numpy(grey.reshape(rec.shape).copy())
    # decode_array returns a new array, so the npz entries need not be copied out (1 MB for depth).
    a = decode_array(read_npz(data, writable=False))
    if not a.flags.writeable or not a.flags.c_contiguous:  # tensors must own writable, contiguous memory
        a = np.array(a, order="C")
    t = torch.from_numpy(a)
    if list(t.shape) != rec.shape or str(t.dtype).removeprefix("torch.") != rec.dtype:
        raise CodecError(f"decodes to {t.dtype} {list(t.shape)}, sample.json says {rec.dtype} {rec.shape}")
    return t


def _decode_image(data: bytes) -> np.ndarray:
    image = read_npz(data, writable=False).get("image")
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 3:
        found = None if image is None else f"{image.dtype} {list(image.shape)}"
        raise CodecError(f"expected entry 'image' uint8 [3, H, W], found {found}")
    return image


def _decode_member(name: str, members: dict[str, bytes], fn: Any) -> Any:
    if name not in members:
        raise CodecError(f"member '{name}' is missing (present: {sorted(members)})")
    try:
        return fn(members[name])
    except CodecError as e:
        raise CodecError(f"member '{name}': {e}") from e
    except Exception as e:  # zlib/zip/PIL/json each raise their own types; name the member instead
        raise CodecError(f"member '{name}' cannot be decoded ({type(e).__name__}: {e})") from e
