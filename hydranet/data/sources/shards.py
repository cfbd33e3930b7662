"""``shards``: hydranet's own tar shards (``hydranet generate`` / ``hydranet convert`` output).

Options: ``path`` (shard directory, its ``manifest.json`` or an fsspec URL, streamed by byte range;
``storage_options`` go to fsspec), ``labels`` (decode only these; None =
all stored) and ``frames``. The setup (rig, image size, grid, vocabulary) and labels are those the
manifest records; ``class_map`` and ``model_classes`` are refused (classes are mapped when converting).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from hydranet.data.sample import Sample
from hydranet.data.shards import ShardDataset
from hydranet.data.sources.base import Source, SourceConfigError, SourceOptions, register_source
from hydranet.setup import Setup


class ShardsOptions(SourceOptions):
    """Options of ``kind: shards``: ``path`` (a shard directory, its ``manifest.json`` or an fsspec URL),
    ``labels`` to decode (None: all stored) and fsspec ``storage_options``.
    """
    path: str  # a shard directory, its manifest.json, or an fsspec URL (s3://, gs://, https://, file://)
    labels: list[str] | None = None  # decode only these labels (None = all stored)
    storage_options: dict[str, Any] = Field(default_factory=dict)  # passed to fsspec (e.g. {anon: true})


@register_source("shards")
class ShardsSource(Source):
    """A ``ShardDataset`` as a source; ``read_members`` gives label presence without decoding."""

    Options = ShardsOptions
    path_option = "path"

    def __init__(self, options: ShardsOptions, setup: Setup | None = None):
        if options.class_map or options.model_classes is not None:  # accepted and not applied would be silent
            field = "class_map" if options.class_map else "model_classes"
            raise SourceConfigError(f"shards.{field}: shards are read with the classes they were written with "
                                    "(their manifest's setup.classes); map classes when converting: "
                                    "hydranet convert KIND --class-map ... --model-classes ...")
        super().__init__(options, setup)
        self.data = ShardDataset(options.path, labels=options.labels, storage_options=options.storage_options)
        self.camera_names = self.data.camera_names
        m = self.data.manifest
        self.labels = frozenset(m.labels)  # type: ignore[misc] - per instance: what this directory holds
        self.classes = {k: tuple(v) for k, v in (m.source.get("classes") or {}).items()}  # type: ignore[misc]

    @property
    def setup(self) -> Setup:
        """The setup the shard manifest records (``ShardDataset.setup``)."""
        return self.data.setup

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Sample:
        return self.data[index]

    def read_members(self, index: int):
        """Raw ``(shard path, key, {member: bytes})`` of sample ``index`` after the CRC check, undecoded;
        raises ``ShardError`` for a truncated or corrupt shard.
        """
        return self.data.read_members(index)
