"""The limits every input is held to, in one place, each with the number a refusal states.

An input big enough to hurt is refused where it enters, with one line naming the file, the value and
the limit (never a ``MemoryError``, a decompression-bomb traceback or a ``RecursionError``):

==========================  ==========================  ==============================================
limit                       default                     raise it with
==========================  ==========================  ==============================================
image pixels (W x H)        64,000,000 (8000 x 8000)    ``hydranet --max-image-pixels N ...`` or
                                                        ``HYDRANET_MAX_IMAGE_PIXELS=N``
JSON nesting depth          100 levels (a line, a       (fixed: no hydranet file nests deeper than ~6)
                            file under 1 MB), else
                            Python's ~1,000
BEV grid cells (rows*cols)  4,194,304 (2048 x 2048)     (fixed: one BEV float32 map is then 16 MB)
suite seeds (stop - start)  1,000 worlds                (fixed: split a larger sweep into suites)
suite frames planned        100,000 per suite           (fixed)
network read deadline       30 s per request            ``HYDRANET_NET_TIMEOUT_S=S``
network retries             3 tries per request         ``HYDRANET_NET_RETRIES=N``
lidar points per sweep      at least 1,000 (where the   source option ``min_lidar_points: N``
                            source has no count of its  (``convert kitti --min-lidar-points N``)
                            own to check the file with)
==========================  ==========================  ==============================================

A lidar file cut short exactly at a point boundary still parses: a reader compares its point count with
the count its source records (nuScenes: ``sample_annotation.num_lidar_pts`` of the keyframe's boxes) and,
where the source records none (KITTI's ``velodyne/*.bin``), refuses a sweep of fewer than
``MIN_LIDAR_POINTS_DEFAULT`` points (a full KITTI sweep holds ~120,000, its camera-cropped
``velodyne_reduced`` ~20,000, a nuScenes LIDAR_TOP sweep ~34,000).

This module imports nothing from hydranet, so every layer (geometry, data, eval, the CLI) can use it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["LimitError", "MAX_IMAGE_PIXELS_DEFAULT", "MAX_SUITE_SEEDS", "MIN_LIDAR_POINTS_DEFAULT", "check_bev_cells",
           "check_lidar_points", "check_suite_size", "documented_limits", "loads_json", "net_retries", "net_timeout_s",
           "max_image_pixels", "open_image", "set_max_image_pixels"]

MAX_IMAGE_PIXELS_DEFAULT = 64_000_000
_MAX_JSON_DEPTH = 100
MAX_BEV_CELLS = 2048 * 2048
MAX_SUITE_SEEDS = 1_000
_MAX_SUITE_FRAMES = 100_000
_NET_TIMEOUT_S_DEFAULT = 30.0
_NET_RETRIES_DEFAULT = 3
MIN_LIDAR_POINTS_DEFAULT = 1_000


def documented_limits() -> dict[str, dict[str, object]]:
    """The defaults above as data (``benchmarks/limits.py`` prints it; README's limits are rendered from it,
    so a changed constant that was not re-recorded fails ``tests/faults/test_faults_limits.py``)."""
    return {
        "image_pixels": {"max": MAX_IMAGE_PIXELS_DEFAULT, "option": "--max-image-pixels",
                         "env": "HYDRANET_MAX_IMAGE_PIXELS"},
        "json_depth": {"max": _MAX_JSON_DEPTH},
        "bev_cells": {"max": MAX_BEV_CELLS, "side": int(MAX_BEV_CELLS ** 0.5)},
        "suite": {"max_seeds": MAX_SUITE_SEEDS, "max_frames": _MAX_SUITE_FRAMES},
        "network": {"timeout_s": _NET_TIMEOUT_S_DEFAULT, "tries": _NET_RETRIES_DEFAULT,
                    "env_timeout": "HYDRANET_NET_TIMEOUT_S", "env_tries": "HYDRANET_NET_RETRIES"},
        "lidar_points": {"min": MIN_LIDAR_POINTS_DEFAULT, "option": "min_lidar_points"},
    }


class LimitError(ValueError):
    """An input over one of the limits above; the message names the input, its value and the limit."""


def _env_number(name: str, default: float, cast: type = int, unit: str = "") -> Any:
    """The number environment variable ``name`` holds (``default`` when unset or blank); anything but a finite
    number > 0 (a whole one for ``cast=int``) is a ``LimitError`` naming the variable and what it accepts."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    shown = f"{default:,}" if cast is int else f"{default:g}"
    accepted = (f"expected a whole number{unit} >= 1" if cast is int else f"expected a number{unit} > 0") + \
        f" (unset: {shown})"
    try:
        value = cast(raw)
    except ValueError:
        raise LimitError(f"environment variable {name}={raw!r}: {accepted}") from None
    if not (value > 0 and math.isfinite(value)):
        raise LimitError(f"environment variable {name}={raw!r}: {accepted}")
    return value


# ---- image pixels -------------------------------------------------------------------------------

_max_image_pixels: int | None = None  # set by the CLI's --max-image-pixels; else the environment/default


def max_image_pixels() -> int:
    """The largest image (width x height, pixels) any reader decodes."""
    if _max_image_pixels is not None:
        return _max_image_pixels
    return int(_env_number("HYDRANET_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS_DEFAULT, int, " of pixels"))


def set_max_image_pixels(pixels: int | None) -> None:
    """Set (``None``: reset to the environment/default) the image limit, and PIL's own bomb guard with it."""
    global _max_image_pixels
    if pixels is not None and pixels < 1:
        raise LimitError(f"--max-image-pixels must be >= 1, got {pixels}")
    _max_image_pixels = pixels
    _configure_pil()


_PIL_DEFAULT_MAX_IMAGE_PIXELS: int | None = None  # PIL's own guard as imported, before any change here


def _configure_pil() -> None:
    """PIL refuses (``DecompressionBombError``) images past twice its ``MAX_IMAGE_PIXELS``. Our limit is checked
    by ``open_image`` before a pixel is decoded; PIL's guard is only raised with it (never lowered below PIL's
    default), so a limit raised for large inputs lets them open, and a small one does not also refuse what
    hydranet draws itself (PIL applies its guard to the glyphs of rendered text, too)."""
    global _PIL_DEFAULT_MAX_IMAGE_PIXELS
    from PIL import Image

    if _PIL_DEFAULT_MAX_IMAGE_PIXELS is None:
        _PIL_DEFAULT_MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 0)
    Image.MAX_IMAGE_PIXELS = max(_PIL_DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels())


def open_image(source: Any, where: str) -> Any:
    """``PIL.Image.open(source)`` that refuses an image whose header claims more than ``max_image_pixels()``
    (``LimitError`` naming ``where``) before a pixel is decoded; the caller closes it (``with``)."""
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # PIL warns past its limit: the check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as e:  # PIL's own guard fired first (over twice its limit)
        m = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise LimitError(f"{where}: image of {pixels} exceeds the limit of {max_image_pixels():,} pixels "
                         "(raise it with `hydranet --max-image-pixels N` or HYDRANET_MAX_IMAGE_PIXELS)") from None
    try:
        check_image_pixels(im.size, where)
    except LimitError:
        im.close()
        raise
    return im


def check_image_pixels(size: tuple[int, int], where: str) -> None:
    """Refuse an image whose header claims ``size = (width, height)`` beyond ``max_image_pixels()``, before a
    pixel is decoded. ``LimitError`` names ``where`` (the file), both sides and the limit."""
    w, h = int(size[0]), int(size[1])
    limit = max_image_pixels()
    if w * h > limit:
        raise LimitError(f"{where}: image of {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} pixels "
                         "(raise it with `hydranet --max-image-pixels N` or HYDRANET_MAX_IMAGE_PIXELS)")


# ---- nesting depth ----------------------------------------------------------------------------------


def _json_depth_exceeds(text: str | bytes, limit: int = _MAX_JSON_DEPTH) -> bool:
    """Whether brackets in ``text`` nest deeper than ``limit`` outside JSON strings. One vectorised pass
    over the bytes (a manifest is megabytes); only a text that looks too deep is rescanned exactly."""
    import numpy as np

    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case: cannot be that deep
        return False
    b = np.frombuffer(data, dtype=np.uint8)
    step = (b == ord("[")).astype(np.int32) + (b == ord("{")) - (b == ord("]")) - (b == ord("}"))
    if int(np.cumsum(step).max()) <= limit:  # brackets inside strings can only raise this bound
        return False
    depth, in_str, escaped = 0, False, False
    for ch in data.decode("utf-8", "replace"):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads_json(text: str | bytes, where: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads`` that refuses text nested deeper than ``_MAX_JSON_DEPTH`` with ``error`` naming ``where``
    (Python's parser would end in a ``RecursionError``). ``json.JSONDecodeError`` passes through."""
    # Large files (manifests) skip the scan: Python's parser itself stops at ~1,000 levels (RecursionError).
    if len(text) <= 1 << 20 and _json_depth_exceeds(text):
        raise error(f"{where}: JSON nested more than {_MAX_JSON_DEPTH} levels deep (refused)")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{where}: JSON nested too deep (refused)") from None


# ---- BEV grid, suites ---------------------------------------------------------------------------


def check_bev_cells(rows: int, cols: int, where: str = "grid") -> None:
    """Refuse a BEV grid of more than ``MAX_BEV_CELLS`` cells (a cell size far too small for its range)."""
    if rows * cols > MAX_BEV_CELLS:
        raise LimitError(f"{where}: {rows} x {cols} = {rows * cols:,} cells exceeds the limit of {MAX_BEV_CELLS:,} "
                         "(2048 x 2048); use a larger cell or a smaller range")


def check_suite_size(seeds: int, frames: int, scenarios: int, where: str = "suite") -> None:
    """Refuse a suite that plans more than ``MAX_SUITE_SEEDS`` worlds or ``_MAX_SUITE_FRAMES`` frames."""
    if seeds > MAX_SUITE_SEEDS:
        raise LimitError(f"{where}: seeds span {seeds:,} worlds, the limit is {MAX_SUITE_SEEDS:,} "
                         "(seeds are [start, stop): split a larger sweep into several suites)")
    total = seeds * frames * scenarios
    if total > _MAX_SUITE_FRAMES:
        raise LimitError(f"{where}: {scenarios} scenarios x {seeds} seeds x {frames} frames = {total:,} frames, "
                         f"the limit is {_MAX_SUITE_FRAMES:,}")


# ---- lidar sweeps --------------------------------------------------------------------------------


def check_lidar_points(count: int, where: str, minimum: int = MIN_LIDAR_POINTS_DEFAULT) -> None:
    """Refuse a lidar sweep of fewer than ``minimum`` points (``LimitError`` naming ``where``, the file): a file
    truncated at a point boundary, where the source records no count to compare it with."""
    if count < minimum:
        raise LimitError(f"{where}: {count:,} lidar points, fewer than the {minimum:,} a sweep holds at least: "
                         "truncated? (a sparser sensor: lower the source option min_lidar_points)")


# ---- network ------------------------------------------------------------------------------------


def net_timeout_s() -> float:
    """Seconds any one network request may take (connect, or between bytes of the answer)."""
    return float(_env_number("HYDRANET_NET_TIMEOUT_S", _NET_TIMEOUT_S_DEFAULT, float, " of seconds"))


def net_retries() -> int:
    """How many times a failed network request is tried in all (>= 1)."""
    return int(_env_number("HYDRANET_NET_RETRIES", _NET_RETRIES_DEFAULT, int, " of tries"))
