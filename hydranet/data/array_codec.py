"""Lossless byte encodings of single arrays and images: a deterministic npz writer, a fast npz reader,
the dense-array encoding of label maps, and PNG/JPEG. ``codec.py`` builds whole samples from these.

Why these encodings: PNG and npz are readable by every tool (``tar x`` then PIL / ``np.load``), are
lossless, and inflate in C (with ISA-L's inflate, python-isal's drop-in for ``zlib.decompress``: the same
bytes out, faster; docs/decisions.md). Camera images default to deflated npz rather than PNG: a plain inflate
reads faster than PIL decodes a PNG, and images are half the read cost of a frame (the measurements are in
docs/decisions.md); PNG stays available for viewable shards. Label maps are npz too. Small-range uint8 maps are
bit-packed, float maps are byte-shuffled (the trick of HDF5's and Blosc's shuffle filter), small non-negative
int maps are narrowed; see ``encode_array``. The original dtype and shape are always restored.
Zip entries carry a fixed timestamp, so equal arrays give equal bytes (reproducible shards,
comparable by sha256). ``read_npz`` parses the zip entries we write directly (np.load's zipfile path is
a noticeable share of the per-frame budget) and falls back to ``np.load`` for anything else.
"""

from __future__ import annotations

import ast
import functools
import io
import struct
import zipfile

import numpy as np
from isal import isal_zlib
from PIL import Image

from hydranet.limits import LimitError, open_image

_PNG_LEVEL = 6  # zlib level: 6 is ~12% smaller than 1 on noisy camera images and decodes as fast
JPEG_QUALITY = 92  # real camera JPEGs are already lossy; 92 keeps re-encoding loss below sensor noise
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamp: reproducible bytes


class CodecError(ValueError):
    """A sample cannot be encoded or a member cannot be decoded; ``shards.py`` adds file and key."""


# --------------------------------------------------------------------------------------------
# npz (deterministic writer) and the dense-array encoding
# --------------------------------------------------------------------------------------------


def write_npz(arrays: dict[str, np.ndarray], compress: bool = True, level: int = 6) -> bytes:
    """``np.savez_compressed`` with a fixed entry timestamp (numpy stamps the wall clock): equal arrays give
    equal bytes. ``arrays``: entry name -> any non-object array (each stored as ``<name>.npy``, dtype and
    shape kept); ``level``: zlib level 0-9 when ``compress``. Raises ``ValueError`` for object arrays."""
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
    """npz bytes -> ``{name: array}`` (``writable=False`` skips a copy when the caller copies anyway).

    Entries written by ``write_npz`` are parsed directly (``ValueError`` for an entry whose CRC-32 does not
    match its bytes or whose deflate stream is damaged, for a damaged header or a cut file, and for an entry whose
    name differs from its central directory's); anything else goes through ``np.load``, which raises
    (``ValueError``, ``zipfile.BadZipFile``, ``OSError``) on bytes that are not an npz file or fail their CRC."""
    fast = _read_npz_fast(data, writable)
    if fast is not None:
        return fast
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # zip local file header


def _read_npz_fast(data: bytes, writable: bool = True) -> dict[str, np.ndarray] | None:
    """Walk the local headers of a plain (non-zip64, no data descriptor) zip of .npy entries; None if the
    file is anything else. Each entry's CRC-32 is checked as ``zipfile`` checks it, an entry whose deflate stream
    does not inflate is refused, and the walk must end at the central directory with as many entries as the zip's
    end record counts (a damaged header or a cut file would otherwise return fewer arrays): ``ValueError``, naming
    the entry where there is one. Each entry's name must be the one the central directory lists for it, as
    ``zipfile`` requires."""
    out: dict[str, np.ndarray] = {}
    pos = 0
    while data[pos:pos + 4] == b"PK\x03\x04":
        _, _, flag, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL.unpack_from(data, pos)
        if flag & 0x8 or method not in (0, 8) or csize == 0xFFFFFFFF:
            return None
        name = data[pos + 30:pos + 30 + nlen].decode()
        start = pos + 30 + nlen + xlen
        raw = data[start:start + csize]
        # bufsize = the known output size: the default 16 kB buffer grows by reallocation (1.6x slower for 1 MB)
        try:
            payload = isal_zlib.decompress(raw, -15, max(usize, 1)) if method == 8 else raw
        except isal_zlib.error as e:
            raise ValueError(f"npz entry {name!r}: the deflated bytes are damaged ({e})") from None
        if len(payload) != usize or not name.endswith(".npy") or payload[:6] != b"\x93NUMPY":
            return None
        if (actual := isal_zlib.crc32(payload)) != crc:
            raise ValueError(f"npz entry {name!r}: CRC-32 mismatch (stored {crc:08x}, data {actual:08x}): "
                             "the bytes are damaged")
        hlen_size = 2 if payload[6] == 1 else 4
        hlen = int.from_bytes(payload[8:8 + hlen_size], "little")
        dtype, shape, fortran = _npy_header(payload[8 + hlen_size:8 + hlen_size + hlen])
        offset = 8 + hlen_size + hlen
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(payload, dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
        out[name[:-4]] = arr.copy() if writable else arr  # frombuffer over bytes is read-only
        pos = start + csize
    if not out:
        return None
    end = data.rfind(b"PK\x05\x06")  # the end-of-central-directory record
    if data[pos:pos + 4] != b"PK\x01\x02" or end < 0 or len(data) < end + 22:
        raise ValueError(f"npz damaged or cut short after entry {len(out)} ({next(reversed(out))!r}): no central "
                         "directory follows it")
    if (counted := int.from_bytes(data[end + 10:end + 12], "little")) != len(out):
        raise ValueError(f"npz damaged: its directory counts {counted} entries, {len(out)} were read")
    central = pos
    for name in (f"{key}.npy" for key in out):  # as zipfile does: each local header's name is the directory's
        if data[central:central + 4] != b"PK\x01\x02" or len(data) < central + 46:
            raise ValueError(f"npz damaged: its central directory ends before entry {name!r}")
        nlen, xlen, clen = struct.unpack_from("<HHH", data, central + 28)
        listed = data[central + 46:central + 46 + nlen].decode(errors="replace")
        if listed != name:
            raise ValueError(f"npz damaged: entry {name!r} is {listed!r} in its central directory")
        central += 46 + nlen + xlen + clen
    return out


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
    """Inverse of ``encode_array``; always returns a new, writable array of the original dtype and shape.
    Raises ``CodecError`` when ``entries`` hold none of the four encodings."""
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
    """uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) to lossless PNG bytes at zlib level ``_PNG_LEVEL``."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="png", compress_level=_PNG_LEVEL)
    return buf.getvalue()


def encode_jpeg(a: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8 ``[H, W, 3]`` RGB to JPEG bytes (4:2:0, deterministic for equal input)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="jpeg", quality=quality)
    return buf.getvalue()


def decode_png(data: bytes, mode: str) -> np.ndarray:
    """PNG (or any PIL-readable image, e.g. JPEG) bytes to uint8 ``[H, W]`` (``mode="L"``) or ``[H, W, 3]``
    (``mode="RGB"``). Raises ``CodecError`` when the image's PIL mode is not ``mode``, and PIL's own
    ``OSError`` for bytes that are no image (``codec._decode_member`` names the member)."""
    try:
        im = open_image(io.BytesIO(data), "image")
    except LimitError as e:
        raise CodecError(str(e)) from None
    with im:
        if im.mode != mode:
            raise CodecError(f"PNG has mode {im.mode}, expected {mode}")
        return np.asarray(im)


