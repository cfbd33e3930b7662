"""What mining reads: the model (checkpoint or ONNX graph), the unlabelled pool, frame metadata.

``--data POOL`` accepts whatever ``hydranet.datasets.open_dataset`` accepts (a shard directory, its
manifest, ``synthetic``, ``synthetic:<world.yaml>``, a world YAML). Labels are never read: shard
pools decode no label member, a synthetic pool renders with every label dropped (it skips the
label computation altogether). Per-frame metadata (``lighting``, ``fog``) comes from the source
where it knows it: the synthetic world's scene, or a dataset's own ``metadata(index)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from hydranet.checkpoint import CheckpointError, load_model
from hydranet.data import ALL_LABELS, ShardError
from hydranet.datasets import open_dataset
from hydranet.deploy import DeployedModel, ExportManifestError
from hydranet.eval import Prediction
from hydranet.world import SyntheticWorld, load_world_config


class PoolError(ValueError):
    """A model or pool that does not open; the message names the path (the CLI adds its option, a pipeline its
    field: the library does not know which the user wrote)."""


def _naming(spec: Any, e: BaseException) -> PoolError:
    """``e`` as a ``PoolError`` whose message names ``spec`` once."""
    message = str(e)
    return PoolError(message if str(spec) in message else f"{spec}: {message}")


def open_pool(spec: str | Any, with_labels: bool = False) -> Dataset:
    """The pool as a map-style dataset of ``Sample``; without labels unless ``with_labels``."""

    try:
        ds = open_dataset(spec, labels=None if with_labels else [])
    except (ShardError, ValueError, OSError) as e:
        raise _naming(spec, e) from None
    if not with_labels and hasattr(ds, "config") and hasattr(ds, "label_present"):  # SyntheticWorld

        cfg = load_world_config(ds.config, {"drop_labels": {k: 1.0 for k in sorted(ALL_LABELS)}})
        ds = SyntheticWorld(cfg)
    return ds


def frame_metadata(ds: Dataset, index: int) -> dict[str, Any]:
    """Conditions the source knows for frame ``index`` ({} when it knows none)."""
    if isinstance(ds, Subset):
        return frame_metadata(ds.dataset, int(ds.indices[index]))
    if isinstance(ds, ConcatDataset):
        import bisect

        j = bisect.bisect_right(ds.cumulative_sizes, index)
        return frame_metadata(ds.datasets[j], index - (ds.cumulative_sizes[j - 1] if j else 0))
    if hasattr(ds, "metadata"):
        return dict(ds.metadata(index))
    if hasattr(ds, "scene") and hasattr(ds, "label_present"):  # SyntheticWorld
        scene = ds.scene(index)
        return {"lighting": scene.lighting, "fog": float(scene.fog)}
    return {}


def load_mining_model(spec: str | Path, device: str = "cpu") -> Any:
    """A ``HydraNet`` from a checkpoint (or run) directory, or a ``DeployedModel`` from ``*.onnx``."""
    path = Path(spec)
    if path.suffix == ".onnx":

        try:
            return DeployedModel(path)
        except (ExportManifestError, FileNotFoundError, ValueError) as e:
            raise _naming(path, e) from None

    try:
        model, _ = load_model(path, device=device)
    except (CheckpointError, OSError, ValueError) as e:
        raise _naming(path, e) from None
    return model.eval()


def model_tasks(model: Any) -> list[str]:
    """The task names of a ``HydraNet`` (``task_objects``) or a ``DeployedModel`` (``tasks``)."""
    return list(getattr(model, "task_objects", None) or model.tasks)


def frame_embeddings(prediction: Prediction) -> np.ndarray:
    """One L2-normalised embedding per frame ``[B, D]`` float32 of a batch the model ran on.

    HydraNet (``Evaluator(keep_features=True)``): the last camera feature level, global-average-pooled per camera
    and concatenated over cameras (the trunk's view of the whole rig, computed once with the heads). ONNX graph:
    the graph exposes no features, so the embedding is each camera downsampled to 8×16 grey pixels."""
    batch, feats = prediction.batch, prediction.features
    if feats is not None:
        last = feats[list(feats)[-1]]  # [B*N, C, h, w]
        emb = last.float().mean((2, 3)).reshape(len(batch), -1)
    else:
        grey = batch.images.float().mean(2)  # [B, N, H, W]
        emb = torch.nn.functional.adaptive_avg_pool2d(grey, (8, 16)).reshape(len(batch), -1)
        emb = emb - emb.mean(1, keepdim=True)
    emb = torch.nn.functional.normalize(emb, dim=1)
    return emb.cpu().numpy().astype(np.float32)
