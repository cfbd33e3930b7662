"""TrafficLightMetric: matching, confusion, recall by hand."""

import pytest
import torch

from hydranet.metrics import TrafficLightMetric


def test_confusion_accuracy_recall():
    gt = {"boxes": torch.tensor([[0, 0, 10, 20], [30, 0, 40, 20], [0, 0, 10, 20.0]]),
          "camera": torch.tensor([0, 0, 1]), "state": torch.tensor([0, 2, 1])}
    pred = {"boxes": torch.tensor([[1, 1, 10, 20], [30, 0, 40, 20], [0, 0, 10, 20], [100, 100, 110, 120.0]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "camera": torch.tensor([0, 0, 0, 1]),
            "state": torch.tensor([0, 1, 2, 2])}
    m = TrafficLightMetric()
    m.update([pred], [gt])
    out = m.compute()
    # camera 0: pred0 -> gt0 (red, red); pred1 -> gt1 (green gt, yellow pred); pred2 finds gt0 taken (IoU with
    # gt1 is 0) -> unmatched; camera 1: pred3 does not overlap gt2 -> gt2 missed
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(2 / 3) and out["precision"] == pytest.approx(0.5)
    assert out["correct_recall"] == pytest.approx(1 / 3)
    assert out["confusion/red/red"] == 1 and out["confusion/green/yellow"] == 1
    assert m.confusion().sum() == 2


def test_cameras_do_not_match_across():
    gt = {"boxes": torch.tensor([[0, 0, 10, 20.0]]), "camera": torch.tensor([0]), "state": torch.tensor([2])}
    pred = {"boxes": gt["boxes"], "scores": torch.ones(1), "camera": torch.tensor([1]), "state": torch.tensor([2])}
    m = TrafficLightMetric()
    m.update([pred, pred], [gt, None])
    out = m.compute()
    assert out["recall"] == 0.0 and out["accuracy"] != out["accuracy"]  # NaN: nothing matched
    with pytest.raises(ValueError, match="state index out of range"):
        m.update([{**pred, "state": torch.tensor([7])}], [gt])
