"""SegmentationIoU, LaneF1 and DepthMetric: hand-computed cases, layouts and streaming."""

import math

import numpy as np
import pytest
import torch

from hydranet.metrics import DepthMetric, LaneF1, SegmentationIoU


def test_binary_iou_by_hand_and_prob_threshold():
    t = torch.zeros(2, 4, 4, dtype=torch.uint8)
    t[0, :2] = 1  # 8 drivable pixels in camera 0
    p = torch.zeros(2, 4, 4)
    p[0, :1] = 0.9  # 4 correct
    p[1, :1] = 0.7  # 4 false positives in camera 1
    p[0, 3, 0] = 0.4  # below threshold: not predicted
    m = SegmentationIoU(["drivable"], multilabel=True)
    m.update([p], [t])
    assert m.compute()["miou"] == pytest.approx(4 / 12)
    two = SegmentationIoU(["background", "drivable"])  # same data as single-label with P(class 1)
    two.update([p], [t])
    out = two.compute()
    assert out["iou/drivable"] == pytest.approx(4 / 12)
    assert out["iou/background"] == pytest.approx(20 / 28)  # 32 px: bg gt 24, bg pred 24, both 20
    assert out["miou"] == pytest.approx((4 / 12 + 20 / 28) / 2)


def test_multilabel_bev_and_nearest_resize():
    t = torch.zeros(3, 4, 4, dtype=torch.uint8)
    t[0] = 1
    t[1, :2, :2] = 1  # class 2 never occurs -> NaN, excluded
    p = torch.zeros(3, 2, 2)  # half resolution: every pred pixel covers 2x2 target pixels
    p[0] = 1.0
    p[1, 0, 0] = 1.0
    p[1, 1, 1] = 0.6
    m = SegmentationIoU(["a", "b", "c"], multilabel=True)
    m.update([p], [t])
    out = m.compute()
    assert out["iou/a"] == 1.0 and out["iou/b"] == pytest.approx(4 / 8) and math.isnan(out["iou/c"])
    assert out["miou"] == pytest.approx(0.75)


def test_single_label_scores_ids_and_ignore():
    t = torch.tensor([[0, 1, 2, 255]])
    scores = torch.tensor([[[5.0, 0, 0, 0], [0, 5, 5, 0], [0, 0, 0, 5]]])  # [N=1, C=3, 1, 4] -> argmax 0 1 1 2
    m = SegmentationIoU(["x", "y", "z"], ignore_index=255)
    m.update([scores.reshape(3, 1, 4)], [t])
    out = m.compute()
    assert out["iou/x"] == 1.0 and out["iou/y"] == 0.5 and out["iou/z"] == 0.0  # pixel 3 ignored
    ids = SegmentationIoU(["x", "y", "z"], ignore_index=255)
    ids.update([torch.tensor([[0, 1, 1, 2]])], [t])
    assert ids.compute() == out
    with pytest.raises(ValueError, match="sample 0"):
        ids.update([torch.zeros(2, 2, 2)], [t])


def test_streaming_equals_one_update():
    rng = torch.Generator().manual_seed(0)
    preds = [torch.rand(3, 8, 8, generator=rng) for _ in range(6)]
    targets = [(torch.rand(3, 8, 8, generator=rng) > 0.5).to(torch.uint8) for _ in range(6)]
    a, b = SegmentationIoU("abc", multilabel=True), SegmentationIoU("abc", multilabel=True)
    for i in range(0, 6, 2):
        a.update(preds[i:i + 2], targets[i:i + 2])
    b.update([torch.stack(preds)], [torch.stack(targets)])  # one frame [6, C, H, W] holding everything
    assert a.compute() == pytest.approx(b.compute())
    assert a.num_frames == 6


def test_lane_f1_tolerance_by_hand():
    t = torch.zeros(1, 10, 10, dtype=torch.uint8)
    t[0, :, 4] = 2  # a solid line, 10 px
    p = torch.zeros(1, 10, 10, dtype=torch.uint8)
    p[0, :, 6] = 2  # 2 px to the right
    p[0, 0, 0] = 1  # a stray dashed pixel: FP
    strict = LaneF1(tolerance_px=1)
    strict.update([p], [t])
    assert strict.compute()["f1"] == 0.0
    loose = LaneF1(tolerance_px=2)
    loose.update([p], [t])
    out = loose.compute()
    assert out["precision"] == pytest.approx(10 / 11) and out["recall"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(2 * (10 / 11) / (1 + 10 / 11))
    assert out["f1/solid"] == pytest.approx(1.0) and out["f1/dashed"] == 0.0 and math.isnan(out["f1/road_edge"])
    wrong_kind = LaneF1(tolerance_px=2)
    wrong_kind.update([torch.where(p == 2, 1, p).to(torch.uint8)], [t])  # right place, wrong kind
    assert wrong_kind.compute()["f1"] == 0.0 and wrong_kind.compute()["f1_any"] > 0.9


def test_lane_scores_argmax():
    t = torch.zeros(1, 6, 6, dtype=torch.uint8)
    t[0, 2] = 3
    scores = torch.zeros(1, 4, 6, 6)
    scores[0, 0] = 1.0
    scores[0, 3, 2] = 5.0
    m = LaneF1(tolerance_px=0)
    m.update([scores], [t])
    assert m.compute()["f1"] == 1.0


def test_depth_by_hand_and_bins():
    t = torch.tensor([[[5.0, 5.0, 0.0, 50.0]]])  # 0: no return, not counted
    p = torch.tensor([[[5.0, 6.0, 9.0, 40.0]]])
    m = DepthMetric(bins=(0, 10, 80))
    m.update([p], [t])
    out = m.compute()
    assert out["abs_rel"] == pytest.approx((0 + 0.2 + 0.2) / 3)
    assert out["rmse"] == pytest.approx(math.sqrt((0 + 1 + 100) / 3))
    assert out["delta1"] == pytest.approx(2 / 3)  # 6/5 = 1.2 < 1.25, 50/40 = 1.25 is not
    assert out["abs_rel/0-10m"] == pytest.approx(0.1) and out["rmse/10-80m"] == pytest.approx(10.0)
    assert out["pixels/0-10m"] == 2 and list(out)[0] == "abs_rel"


def test_depth_streaming_and_resize():
    rng = np.random.default_rng(0)
    t = [torch.tensor(rng.uniform(0, 90, (2, 8, 8))) for _ in range(4)]
    p = [torch.tensor(rng.uniform(1, 90, (2, 4, 4))) for _ in range(4)]  # half resolution
    a, b = DepthMetric(), DepthMetric()
    a.update(p[:2], t[:2])
    a.update(p[2:], t[2:])
    b.update([torch.cat(p)], [torch.cat(t)])
    assert a.compute() == pytest.approx(b.compute(), nan_ok=True)
    up = [x.repeat_interleave(2, -1).repeat_interleave(2, -2) for x in p]
    c = DepthMetric()
    c.update(up, t)
    assert c.compute() == pytest.approx(a.compute(), nan_ok=True)


def test_boundary_iou_scores_the_edge_not_the_interior():
    """IoU of a big region flatters (an image-blind prior scores drivable IoU 0.73); Boundary IoU
    (Cheng et al. 2021) scores the band along the contour. Image border is not a contour."""
    from hydranet.metrics import SegmentationIoU

    target = torch.zeros(1, 4, 8, dtype=torch.uint8)
    target[..., :4] = 1  # left half: the only contour is column 3 | 4
    shifted = torch.zeros_like(target)
    shifted[..., :5] = 1  # one column too far: band is column 4, the target's band column 3
    m = SegmentationIoU(classes=("drivable",), multilabel=True, boundary_px=1)
    m.update([shifted], [target])
    out = m.compute()
    assert out["miou"] == pytest.approx(16 / 20) and out["boundary_iou"] == 0.0
    m = SegmentationIoU(classes=("drivable",), multilabel=True, boundary_px=1)
    m.update([target.clone()], [target])
    assert m.compute()["boundary_iou"] == 1.0 and m.compute()["boundary_iou/drivable"] == 1.0
    wide = SegmentationIoU(classes=("drivable",), multilabel=True, boundary_px=2)
    wide.update([shifted], [target])
    # bands: target cols 2-3 (8 px), prediction cols 3-4 (8 px): 4 shared of 12
    assert wide.compute()["boundary_iou"] == pytest.approx(4 / 12)
