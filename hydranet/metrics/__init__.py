"""Streaming, DDP-mergeable metrics for every task (subclasses of ``hydranet.metrics.base.Metric``).

Every metric keeps one small record per evaluated frame (``FrameMetric``): streaming is exact,
memory is bounded for dense tasks, ``sync()`` merges DDP ranks and ``compute_frames(idx)`` gives
the bootstrap the regression gate needs. Matching rules are in each module's docstring.
"""

from hydranet.metrics.base import Metric
from hydranet.metrics.depth import DepthMetric
from hydranet.metrics.detection2d import Detection2DMetric
from hydranet.metrics.detection3d import Detection3DMetric
from hydranet.metrics.frame_records import FrameMetric
from hydranet.metrics.lanes import LaneF1
from hydranet.metrics.segmentation import SegmentationIoU
from hydranet.metrics.traffic_light import TrafficLightMetric

__all__ = ["Metric", "DepthMetric", "Detection2DMetric", "Detection3DMetric", "FrameMetric", "LaneF1",
           "SegmentationIoU", "TrafficLightMetric"]
