"""Any registered source → hydranet shards, streaming: ``hydranet convert KIND --out SHARDS [options]``.

One sample is read, resized, encoded and appended at a time, so memory is bounded by one sample
whatever the dataset size (``ShardWriter`` holds only the open shard's byte index).

Resizing (``image_size`` = (H, W)): a source whose options take ``image_size`` (nuScenes) resizes
itself, so lidar depth is projected at the output resolution; for the others ``resize_sample``
resizes images bilinearly (antialiased) and rescales K per axis (``K' = diag(W'/W, H'/H, 1) K``, the
only geometry that changes), per-camera label maps by nearest neighbour (float maps such as sparse
depth by keeping the nearest return that lands in each output pixel, so no invalid 0 is averaged
into a depth), and ragged pixel fields (``LabelSpec.pixel_fields``: 2D boxes) by the same scale.

Encoding, chosen per member: camera images as JPEG (default for real data, ``image_format="jpeg"``),
PNG or npz; labels lossless, as npz (fastest to read) or, per label (``label_formats={"drivable":
"png"}``), dense uint8 maps as grey PNG (viewable) — see ``codec.py``. The manifest's ``source`` records the source's
kind, options, labels, the model vocabulary its classes were mapped onto, and the class-map report
(classes kept and dropped, with counts); its ``setup`` is the source's (``Source.setup``: each camera's
native size, K and T_ego_from_cam) at the output image size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from hydranet.data.labels import label_spec
from hydranet.data.manifest import ShardManifest, read_manifest
from hydranet.data.sample import Sample
from hydranet.data.shards import ShardWriter
from hydranet.data.sources import Source, SourceOptions, parse_options, source_class


def _resize_float_map(a: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W]`` float map with 0 = no value → ``[N, h, w]``: every valid pixel lands in the output
    pixel holding its centre; the smallest value (the nearest return) wins."""
    n, h0, w0 = a.shape
    h, w = hw
    out = torch.zeros(n, h, w, dtype=a.dtype)
    for k in range(n):
        v, u = torch.nonzero(a[k] > 0, as_tuple=True)
        z = a[k, v, u]
        ou = ((u.double() + 0.5) * w / w0).long().clamp_(0, w - 1)
        ov = ((v.double() + 0.5) * h / h0).long().clamp_(0, h - 1)
        order = torch.argsort(z, descending=True)  # far first; nearest written last
        out[k, ov[order], ou[order]] = z[order]
    return out


def resize_sample(sample: Sample, hw: tuple[int, int]) -> Sample:
    """``sample`` at image size ``hw`` = (H, W); see the module docstring. Returns a new Sample."""
    h0, w0 = sample.images.shape[-2:]
    h, w = hw
    if (h0, w0) == (h, w):
        return sample
    sx, sy = w / w0, h / h0
    images = F.interpolate(sample.images.float(), size=(h, w), mode="bilinear", align_corners=False,
                           antialias=True).round_().clamp_(0, 255).to(torch.uint8)
    K = sample.intrinsics.clone()
    K[:, 0, :] *= sx
    K[:, 1, :] *= sy
    labels: dict[str, Any] = {}
    for name, value in sample.labels.items():
        spec = label_spec(name)
        if spec.kind == "ragged":
            value = dict(value)
            for field in spec.pixel_fields:
                if field in value:
                    value[field] = value[field] * torch.tensor([sx, sy, sx, sy], dtype=value[field].dtype)
        elif spec.per_camera:
            if value.is_floating_point():
                value = _resize_float_map(value, hw)
            else:
                value = F.interpolate(value[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(value.dtype)
        labels[name] = value
    return Sample(images=images, intrinsics=K, T_ego_from_cam=sample.T_ego_from_cam,
                  T_world_from_ego=sample.T_world_from_ego, timestamp=sample.timestamp, scene_id=sample.scene_id,
                  camera_names=sample.camera_names, frame_index=sample.frame_index, labels=labels)


def source_options(config: dict[str, Any], image_size: tuple[int, int] | None) -> SourceOptions:
    """Parse a source config, handing ``image_size`` to sources that resize themselves."""

    cls = source_class(str(config.get("kind")))
    if image_size is not None and "image_size" in cls.Options.model_fields and "image_size" not in config:
        config = {**config, "image_size": list(image_size)}
    return parse_options(config, str(config.get("kind")))


def convert(source: Source, out: str | Path, *, image_size: tuple[int, int] | None = None,
            image_format: str = "jpeg", label_formats: dict[str, str] | None = None, shard_size: int = 64,
            overwrite: bool = False, frames: int | None = None,
            on_sample: Callable[[int], None] | None = None) -> tuple[ShardManifest, dict[str, Any]]:
    """Write ``source`` (its first ``frames`` samples, default all) into shards at ``out``.

    Returns the manifest and a report: samples, label counts, class-map report. Raises the source's
    ``SourceError`` / ``ShardError`` naming the sample, file or token at fault, ``OutputError`` for a
    non-empty ``out`` without ``overwrite`` (or, with it, one that holds no dataset). The dataset is written
    through ``ShardWriter``: it replaces ``out`` only once complete, so on any error (Ctrl-C included) ``out``
    is as it was -- an earlier dataset intact, no directory at all for a first conversion.
    """
    if isinstance(source, Subset):  # open_dataset({... "frames": N}): the first N samples of a source
        frames = len(source) if frames is None else min(frames, len(source))
        if list(source.indices) != list(range(len(source))):
            raise ValueError("convert takes a source or the first N samples of one (a Subset of a prefix)")
        source = source.dataset
    n = len(source) if frames is None else min(frames, len(source))
    record = source.describe()
    counts: dict[str, int] = {}
    setup = source.setup  # the rig with each camera's native size and K; frames are resized to image_size
    if image_size is not None:
        setup = setup.model_copy(update={"image_size": tuple(int(v) for v in image_size)})
    with ShardWriter(out, shard_size=shard_size, source=record, image_format=image_format,
                     label_formats=label_formats, overwrite=overwrite, setup=setup) as writer:
        for i in range(n):
            sample = source[i]
            if image_size is not None:
                sample = resize_sample(sample, image_size)
            for k in sample.labels:
                counts[k] = counts.get(k, 0) + 1
            writer.write(sample)
            if on_sample is not None:
                on_sample(1)
        # The manifest is written on close: record what the classes became before that.
        record["classes"] = {k: list(setup.vocabulary(k) or label_spec(k).vocabulary or ()) for k in counts
                             if setup.vocabulary(k) or label_spec(k).vocabulary}
        record["source_classes"] = {k: list(v) for k, v in source.classes.items()}
        record["class_map"] = source.class_map.report()
        record["skipped"] = dict(source.skipped)
    manifest = read_manifest(out)  # written by the writer's __exit__
    report = {"samples": n, "labels": counts, "class_map": record["class_map"],
              "image_size": list(manifest.image_size), "cameras": list(manifest.camera_names),
              "skipped": record["skipped"]}
    return manifest, report
