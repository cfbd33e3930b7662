"""Streaming, DDP-mergeable metrics for every task (subclasses of ``hydranet.metrics.base.Metric``).

Every metric keeps one small record per evaluated frame (``FrameMetric``): streaming is exact,
memory is bounded for dense tasks, ``sync()`` merges DDP ranks and ``compute_frames(idx)`` gives
the bootstrap the regression gate needs. Matching rules are in each module's docstring.
"""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "base": ["Metric", "NO_GROUND_TRUTH"],
    "depth": ["DepthMetric"],
    "detection2d": ["Detection2DMetric"],
    "detection3d": ["Detection3DMetric", "NUSCENES_CLASS_RANGE"],
    "frame_records": ["FrameMetric"],
    "lanes": ["LaneF1"],
    "segmentation": ["SegmentationIoU"],
    "temporal": ["TEMPORAL_KEYS_3D", "TemporalDetection3DMetric", "TemporalTrafficLightMetric"],
    "traffic_light": ["TrafficLightMetric"],
})
