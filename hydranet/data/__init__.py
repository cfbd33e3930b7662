"""Data: the ``Sample`` contract (sample.py), shards on disk (shards.py, codec.py,
manifest.py), loaders. Opening a source by name (shards, the synthetic world) is ``hydranet.datasets``."""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "array_codec": ["CodecError"],
    "codec": ["IMAGE_FORMATS", "encode_sample"],
    "convert": ["convert", "resize_sample", "source_options"],
    "errors": ["NetworkError", "ShardError", "ShardManifestError"],
    "labels": ["BEV_CLASSES", "LANE_KINDS", "LIGHT_STATES", "LabelSpec", "SEMANTIC_CLASSES", "is_ragged",
        "known_labels", "label_spec", "register_label"],
    "loaders": ["make_loader", "set_epoch"],
    "manifest": ["MANIFEST_NAME", "ShardManifest", "read_manifest"],
    "sample": ["ALL_LABELS", "Batch", "Sample", "collate"],
    "sequences": ["clip_starts", "sequence_keys"],
    "shards": ["ShardDataset", "ShardWriter", "recorded_shards", "sample_key"],
    "sources.base": ["SOURCES", "Source", "SourceConfigError", "SourceError", "SourceOptions", "open_source",
        "parse_options", "parse_source_spec", "register_source", "source_class"],
    "storage": ["is_url"],
})
