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

Why these encodings: PNG and npz are readable by every tool (``tar x`` then PIL / ``np.load``), are
lossless, and inflate with zlib in C. Camera images default to deflated npz rather than PNG:
on the synthetic world's noisy 128x256 images PNG is ~30% smaller (51 vs 72 kB) but PIL decodes it
~1.8x slower than a plain inflate (0.79 vs 0.43 ms per camera), and images are half the read
cost of a frame; PNG stays available for viewable shards. Label maps are npz too: a flat mask
inflates 4x faster than PIL decodes the same PNG (0.12 vs 0.47 ms for 8x128x256).
Small-range uint8 maps are bit-packed (a drivable mask inflates 5x faster), float maps are
byte-shuffled (the trick of HDF5's and Blosc's shuffle filter: ~8x smaller depth), small
non-negative int maps are narrowed (instance ids: 3x faster); see ``encode_array``. The original
dtype and shape are always restored.
Zip entries carry a fixed timestamp, so equal samples give equal bytes (reproducible shards,
comparable by sha256). ``read_npz`` parses the zip entries we write directly (np.load's zipfile
path costs ~0.2 ms per file, which is 20% of the per-frame budget) and falls back to ``np.load``
for anything else.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import struct
import zipfile
import zlib
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
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

from hydranet.data.labels import known_labels
from hydranet.data.sample import Sample

PNG_LEVEL = 6  # zlib level: 6 is ~12% smaller than 1 on noisy camera images and decodes as fast
IMAGE_LEVEL = 1  # deflate level for npz images: sensor noise makes higher levels <1% smaller, 3x slower
IMAGE_FORMATS = ("npz", "png", "jpeg")
IMAGE_EXT = {"npz": "npz", "png": "png", "jpeg": "jpg"}
JPEG_QUALITY = 92  # real camera JPEGs are already lossy; 92 keeps re-encoding loss below sensor noise
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamp: reproducible bytes


class CodecError(ValueError):
    """A sample cannot be encoded or a member cannot be decoded; ``shards.py`` adds file and key."""


# --------------------------------------------------------------------------------------------
# npz (deterministic writer) and the dense-array encoding
# --------------------------------------------------------------------------------------------


def write_npz(arrays: dict[str, np.ndarray], compress: bool = True, level: int = 6) -> bytes:
    """``np.savez_compressed`` with a fixed entry timestamp (numpy stamps the wall clock)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=level if compress else None) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
            info.compress_type = method
            # zf.open(info) ignores the ZipFile's level; the attribute is public only from Python 3.13.
            setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", level)
            with zf.open(info, "w") as f:  # no zip64: keeps sizes in the local header for read_npz
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def read_npz(data: bytes, writable: bool = True) -> dict[str, np.ndarray]:
    """npz bytes -> ``{name: array}`` (``writable=False`` skips a copy when the caller copies anyway)."""
    fast = _read_npz_fast(data, writable)
    if fast is not None:
        return fast
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # zip local file header


def _read_npz_fast(data: bytes, writable: bool = True) -> dict[str, np.ndarray] | None:
    """Walk the local headers of a plain (non-zip64, no data descriptor) zip of .npy entries; None if the
    file is anything else. Integrity is the caller's job (shards check a CRC over the whole sample)."""
    out: dict[str, np.ndarray] = {}
    pos = 0
    while data[pos:pos + 4] == b"PK\x03\x04":
        _, _, flag, method, _, _, _, csize, usize, nlen, xlen = _LOCAL.unpack_from(data, pos)
        if flag & 0x8 or method not in (0, 8) or csize == 0xFFFFFFFF:
            return None
        name = data[pos + 30:pos + 30 + nlen].decode()
        start = pos + 30 + nlen + xlen
        raw = data[start:start + csize]
        # bufsize = the known output size: the default 16 kB buffer grows by reallocation (1.6x slower for 1 MB)
        payload = zlib.decompress(raw, -15, max(usize, 1)) if method == 8 else raw
        if len(payload) != usize or not name.endswith(".npy") or payload[:6] != b"\x93NUMPY":
            return None
        hlen_size = 2 if payload[6] == 1 else 4
        hlen = int.from_bytes(payload[8:8 + hlen_size], "little")
        dtype, shape, fortran = _npy_header(payload[8 + hlen_size:8 + hlen_size + hlen])
        offset = 8 + hlen_size + hlen
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(payload, dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
        out[name[:-4]] = arr.copy() if writable else arr  # frombuffer over bytes is read-only
        pos = start + csize
    return out if out else None


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    # Headers repeat across samples (same dtype, often same shape): cache the literal_eval.
    d = ast.literal_eval(header.decode("latin1"))
    if not isinstance(d, dict) or d.get("descr") in (None, "|O"):
        raise ValueError(f"unsupported npy header {header[:80]!r}")
    return np.dtype(np.lib.format.descr_to_dtype(d["descr"])), tuple(d["shape"]), bool(d["fortran_order"])


def encode_array(a: np.ndarray) -> dict[str, np.ndarray]:
    """Lossless npz entries for a dense array, plus ``dtype`` (the original dtype):

    - ``packed`` + ``bits`` + ``shape``: uint8 maps whose values fit 1, 2 or 4 bits (masks, lane
      classes, semantic ids), packed ``8 // bits`` values per byte, most significant first. Flat
      masks deflate to long runs that zlib inflates byte by byte; packing cuts that work 2-8x.
    - ``shuffled``: floats as ``[itemsize, *shape]`` uint8, the little-endian bytes grouped by
      significance (near-constant exponent bytes then deflate ~8x better).
    - ``narrowed``: non-negative ints stored as uint8/uint16 when they fit (instance ids).
    - ``array``: anything else, as is.
    """
    a = np.ascontiguousarray(a)
    out: dict[str, np.ndarray] = {"dtype": np.array(a.dtype.str)}
    if a.dtype == np.uint8 and a.size:
        bits = next((b for b in (1, 2, 4) if int(a.max()) < (1 << b)), None)
        if bits is not None:
            per = 8 // bits
            flat = np.zeros(-(-a.size // per) * per, np.uint8)
            flat[:a.size] = a.reshape(-1)
            groups = flat.reshape(-1, per)
            packed = np.zeros(len(groups), np.uint8)
            for j in range(per):
                packed |= groups[:, j] << np.uint8(8 - bits * (j + 1))
            return out | {"packed": packed, "bits": np.array(bits), "shape": np.array(a.shape, np.int64)}
    if a.dtype.kind == "f" and a.dtype.itemsize > 1 and a.size:
        le = a.astype(a.dtype.newbyteorder("<"), copy=False)
        out["shuffled"] = np.ascontiguousarray(le.view(np.uint8).reshape(*a.shape, a.dtype.itemsize).transpose(
            a.ndim, *range(a.ndim)))
        return out
    if a.dtype.kind in "iu" and a.dtype.itemsize > 1 and a.size and int(a.min()) >= 0:
        hi = int(a.max())
        narrow = np.uint8 if hi < 256 else np.uint16 if hi < 65536 else None
        if narrow is not None and np.dtype(narrow).itemsize < a.dtype.itemsize:
            out["narrowed"] = a.astype(narrow)
            return out
    out["array"] = a
    return out


def decode_array(entries: dict[str, np.ndarray]) -> np.ndarray:
    """Inverse of ``encode_array``; always returns a new, writable array."""
    dtype = np.dtype(str(entries["dtype"]))
    if "packed" in entries:
        bits, shape = int(entries["bits"]), tuple(int(x) for x in entries["shape"])
        packed, per = entries["packed"], 8 // bits
        size = int(np.prod(shape))
        if bits == 1:
            flat = np.unpackbits(packed, count=size)
        else:
            groups = np.empty((len(packed), per), np.uint8)
            for j in range(per):
                groups[:, j] = (packed >> np.uint8(8 - bits * (j + 1))) & np.uint8((1 << bits) - 1)
            flat = groups.reshape(-1)[:size]
        return flat.reshape(shape).astype(dtype, copy=False)  # flat is already a new array
    if "shuffled" in entries:
        planes = entries["shuffled"]  # [itemsize, *shape] uint8
        out = np.empty((*planes.shape[1:], planes.shape[0]), np.uint8)
        for k in range(planes.shape[0]):  # four strided copies beat one transpose copy by ~3x
            out[..., k] = planes[k]
        return out.view(dtype.newbyteorder("<"))[..., 0].astype(dtype, copy=False)
    if "narrowed" in entries:
        return entries["narrowed"].astype(dtype)  # always a new array, like every branch here
    if "array" in entries:
        return entries["array"].astype(dtype)  # a copy: entries may be read-only views (read_npz(writable=False))
    raise CodecError(f"dense npz has none of 'packed', 'shuffled', 'narrowed', 'array' (entries: {sorted(entries)})")


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------


def encode_png(a: np.ndarray) -> bytes:
    """uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) to PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="png", compress_level=PNG_LEVEL)
    return buf.getvalue()


def encode_jpeg(a: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8 ``[H, W, 3]`` RGB to JPEG bytes (4:2:0, deterministic for equal input)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="jpeg", quality=quality)
    return buf.getvalue()


def decode_png(data: bytes, mode: str) -> np.ndarray:
    """PNG (or any PIL-readable image, e.g. JPEG) bytes to uint8; ``mode`` must match."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != mode:
            raise CodecError(f"PNG has mode {im.mode}, expected {mode}")
        return np.asarray(im)


# --------------------------------------------------------------------------------------------
# Sample <-> members
# --------------------------------------------------------------------------------------------

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
            members.append((f"cam.{name}.npz", write_npz({"image": img}, level=IMAGE_LEVEL)))
        elif image_format == "png":
            members.append((f"cam.{name}.png", encode_png(img.transpose(1, 2, 0))))
        else:
            members.append((f"cam.{name}.jpg", encode_jpeg(img.transpose(1, 2, 0))))
    index: dict[str, dict[str, Any]] = {}
    for label in sorted(sample.labels):
        value = sample.labels[label]
        if isinstance(value, dict):
            arrays = {}
            for field, t in value.items():
                if not isinstance(t, torch.Tensor):
                    raise CodecError(f"label '{label}' field '{field}' is {type(t).__name__}, expected a tensor")
                arrays[field] = t.detach().cpu().numpy()
            member, data = f"{label}.npz", write_npz(arrays)
            index[label] = {"member": member, "kind": "ragged"}
        elif isinstance(value, torch.Tensor):
            a = value.detach().cpu().contiguous().numpy()
            fmt = label_formats.get(label, "npz")
            if fmt == "png":
                if a.dtype != np.uint8 or a.ndim < 2:
                    raise CodecError(f"label '{label}' is {a.dtype} {list(a.shape)}: only uint8 maps can be PNG")
                member, data = f"{label}.png", encode_png(a.reshape(-1, a.shape[-1]))
            elif fmt == "npz":
                member, data = f"{label}.npz", write_npz(encode_array(a))
            else:
                raise CodecError(f"label '{label}': format must be npz or png, got {fmt!r}")
            index[label] = {"member": member, "kind": "dense", "shape": list(a.shape),
                            "dtype": str(value.dtype).removeprefix("torch.")}
        else:
            raise CodecError(f"label '{label}' is {type(value).__name__}; labels are tensors or dicts of tensors")
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
        member = f"cam.{n}.{IMAGE_EXT[fmt]}"
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
