"""Labelling a queue into a new shard directory: the ``oracle`` and the shared writer.

``oracle``: on the synthetic world the world's exact ground truth stands in for human labellers.
Every labelled frame records what it *cost* — 1 frame plus one annotation per 2D box, traffic
light and 3D box, and one per dense map (drivable, lanes, depth, ...) — so budgets and reports are
in labels bought, not only in frames. The auto-labeller (``autolabel.py``) writes through the
same ``write_labelled``.

Output (``out``): the shards + ``manifest.json`` of the labelled frames (a dataset any command can
train on), and ``labels.jsonl``: per frame its queue rank, pool index, frame id, cost, provenance
and confidence. Nothing from the pool is copied besides the queued frames themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from hydranet.data import MANIFEST_NAME, Sample, ShardWriter, label_spec, recorded_shards
from hydranet.json_files import dumps
from hydranet.outputs import staged_directory

OBJECT_LABELS = ("detection2d", "traffic_light", "objects3d")
_LABELS_FILE = "labels.jsonl"  # per labelled frame: rank, index, frame id, cost, provenance, confidence


def _recorded_labels(out: Path) -> set[str]:
    """The files an earlier ``label`` output records: ``labels.jsonl`` and its shard dataset, if it wrote one."""
    return {_LABELS_FILE, *(recorded_shards(out) if (out / MANIFEST_NAME).is_file() else ())}


class LabelError(ValueError):
    """A queue that cannot be labelled from this pool (e.g. a frame without ground truth)."""


def label_cost(labels: dict[str, Any]) -> dict[str, int]:
    """Annotations a person would have drawn for these labels."""
    objects = 0
    for name in OBJECT_LABELS:
        if name in labels:
            objects += int(len(labels[name]["boxes"]))
    dense = sum(1 for name in labels if label_spec(name).kind == "dense")
    return {"frames": 1, "objects": objects, "dense_maps": dense, "total": 1 + objects + dense}


@dataclass
class Labelled:
    """One labelled frame: the ``Sample`` with its new labels and its JSON record (provenance, confidence, cost)."""

    sample: Sample
    record: dict[str, Any]  # provenance, confidence, cost (JSON-serialisable)


def write_labelled(out: str | Path, items: Iterator[Labelled], pool: Dataset, source: dict[str, Any],
                   shard_size: int = 64, overwrite: bool = False) -> dict[str, Any]:
    """Write labelled samples as shards (+ ``labels.jsonl``) into ``out``; returns a summary.

    The whole output is written into a ``hydranet.outputs.staged_directory`` and put in place only once
    complete: on any error (Ctrl-C included) ``out`` is as it was. A non-empty ``out`` is refused
    (``OutputError``, before an item is drawn) unless ``overwrite``, which replaces only an earlier ``label``
    output (one holding ``labels.jsonl``): labels bought earlier are never deleted silently. With no item
    (every frame filtered out) no shard is written, ``labels.jsonl`` is empty and ``path`` is None."""

    setup = getattr(pool, "setup", None)  # what the pool's frames are (a source, world or shards reports it)
    records = []
    with staged_directory(out, overwrite, _LABELS_FILE, owned=_recorded_labels) as stage:
        items = iter(items)
        first = next(items, None)
        if first is not None:  # a shard directory needs at least one sample
            # ``kind: label``: what `data-info` names as the dataset's source (the labeller and queue beside it).
            with ShardWriter(stage, shard_size=shard_size, setup=setup, source={"kind": "label", **source},
                             staged=False) as w:
                for item in itertools.chain([first], items):
                    w.write(item.sample)
                    records.append(item.record)
        (stage / _LABELS_FILE).write_text("".join(dumps(r, indent=None) + "\n" for r in records))
    cost = {k: sum(r["cost"][k] for r in records) for k in ("frames", "objects", "dense_maps", "total")}
    return {"frames": len(records), "cost": cost, "path": str(out) if records else None}


def check_queue_fits(queue: list[dict[str, Any]], pool: Dataset) -> None:
    """``LabelError`` when a queued pool index is outside ``pool`` (the queue of another pool)."""
    size = len(pool)  # type: ignore[arg-type]
    for row in queue:
        if not 0 <= row["index"] < size:
            raise LabelError(f"queue rank {row.get('rank')}: pool index {row['index']} is outside the pool ({size} "
                             "frames): is this the pool the queue was mined from?")


def oracle_items(queue: list[dict[str, Any]], pool: Dataset, labels: list[str] | None = None) -> Iterator[Labelled]:
    """Ground truth for every queued frame; ``labels`` keeps only these label names (None = all)."""
    check_queue_fits(queue, pool)
    for row in queue:
        sample = pool[row["index"]]
        if f"{sample.scene_id}#{sample.frame_index}" != row["frame_id"]:
            raise LabelError(f"queue rank {row.get('rank')}: pool index {row['index']} is "
                             f"{sample.scene_id}#{sample.frame_index}, the queue says {row['frame_id']}: "
                             "is this the pool the queue was mined from?")
        if labels is not None:
            sample.labels = {k: v for k, v in sample.labels.items() if k in labels}
        if not sample.labels:
            raise LabelError(f"{row['frame_id']}: the pool has no ground truth for this frame; the oracle needs a "
                             "labelled source (the synthetic world, or shards with labels)")
        record = {"rank": row.get("rank"), "index": row["index"], "frame_id": row["frame_id"],
                  "cost": label_cost(sample.labels), "provenance": {"labeller": "oracle"}, "confidence": 1.0}
        yield Labelled(sample, record)
