"""Data sources: a registry of readers, one file per format, each a map-style dataset of ``Sample``.

Built in: ``world`` (the synthetic 8-camera world), ``shards`` (hydranet's own tar shards) and
``nuscenes`` (through nuscenes-devkit). ``open_source({"kind": ..., **options})`` builds one;
``hydranet.datasets.open_dataset`` and training configs (``data.datasets.<name>: {kind: ..., ...}``) go
through it, and ``hydranet convert KIND --out SHARDS --option value`` writes any of them to shards.

How to add a source (say ``kitti``)
-----------------------------------
1. Create ``hydranet/data/sources/kitti.py``::

       from hydranet.data.sources import Source, SourceOptions, register_source
       from hydranet.setup import Setup

       class KittiOptions(SourceOptions):          # pydantic, extra="forbid": typos are errors
           root: str                                # the folder holding training/
           split: Literal["training"] = "training"

       @register_source("kitti")
       class KittiSource(Source):
           Options = KittiOptions
           path_option = "root"                     # "kitti:/data/kitti" fills this option
           labels = frozenset({"detection2d", "objects3d"})         # what it can produce
           classes = {"objects3d": ("Car", "Pedestrian", ...)}      # its own vocabulary
           default_class_map = {"Car": "car", "Pedestrian": "pedestrian", "Cyclist": "bicycle"}

           def __init__(self, options: KittiOptions, setup: Setup | None = None):
               super().__init__(options, setup)     # self.class_map from options.class_map; self.model_setup
               self.camera_names = ("front",)       # the rig; K and T come per Sample
               self.frames = [...]                  # index the files; raise SourceError naming them
           def __len__(self): return len(self.frames)
           def __getitem__(self, i) -> Sample: ...  # images uint8 [N,3,H,W], K, T, labels
           # optional: label_present(i, label) -> bool without decoding images (training uses it)
           # optional: a ``setup`` property naming native sizes / the grid (default: from sample 0)

2. That is all for a built-in (the registry loads every module of this package); a source in another
   distribution exposes its module through the ``hydranet.sources`` entry-point group. Nothing else names
   sources.
3. Test it on a tiny fixture written in the official format by the test itself.

Rules every source keeps: ``Sample`` geometry follows ``hydranet/geometry.py`` (ego frame x forward,
y left, z up; OpenCV cameras; ``T_ego_from_cam`` per camera; ``T_world_from_ego``; timestamps in
seconds); images resized by ``image_size`` rescale K and nothing else; labels are the registered
label formats (``hydranet.data.labels``) with classes mapped through ``self.class_map`` onto the
vocabulary ``model_classes`` (unmapped classes are dropped and counted in ``self.class_map.dropped``);
missing files or tokens raise ``SourceError`` naming the file or token.

Every source is opened for a model's ``Setup`` (``open_source(config, setup=...)``; training passes the model's,
``hydranet convert --config`` a training config's; None: the defaults), kept as ``model_setup``: a label made on
the model's geometry is made there (nuScenes rasterises ``bev_semantic`` on ``model_setup.grid``; the grid is
never a source option). Every source reports its own ``setup`` (``hydranet.setup.Setup``): the rig its frames
come from (camera names, K, T_ego_from_cam), their image size, the BEV grid of its BEV labels (None without) and
the class vocabulary of its object labels; ``hydranet.setup.check_fits`` compares it with a model's.
"""

from hydranet.data.sources.base import (
    SOURCES,
    Source,
    SourceConfigError,
    SourceError,
    SourceOptions,
    open_source,
    parse_options,
    parse_source_spec,
    register_source,
    source_class,
)

__all__ = ["SOURCES", "Source", "SourceOptions", "SourceError", "SourceConfigError", "register_source",
           "open_source", "parse_options", "source_class", "parse_source_spec"]
