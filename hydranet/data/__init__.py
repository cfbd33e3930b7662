"""Data: the ``Sample`` contract (sample.py), shards on disk (shards.py, codec.py,
manifest.py), loaders. Opening a source by name (shards, the synthetic world) is ``hydranet.datasets``."""

from hydranet.data.loaders import make_loader, set_epoch
from hydranet.data.manifest import ShardError, ShardManifestError
from hydranet.data.sample import Batch, Sample, collate
from hydranet.data.shards import ShardDataset, ShardWriter

__all__ = ["Sample", "Batch", "collate", "ShardDataset", "ShardWriter", "ShardError", "ShardManifestError",
           "make_loader", "set_epoch"]
