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


def test_per_state_recall_precision_and_balanced_accuracy():
    """The demo head called every light green -- 'accuracy 0.857'. The headline must expose it."""
    boxes = torch.tensor([[10.0 * i, 0, 10.0 * i + 8, 20] for i in range(7)])
    gt = {"boxes": boxes, "camera": torch.zeros(7, dtype=torch.long), "state": torch.tensor([0, 0, 0, 0, 2, 2, 1])}
    all_green = {"boxes": boxes, "scores": torch.ones(7), "camera": torch.zeros(7, dtype=torch.long),
                 "state": torch.full((7,), 2)}
    m = TrafficLightMetric()
    m.update([all_green], [gt])
    out = m.compute()
    assert next(iter(out)) == "balanced_accuracy"  # the headline the gate and INT8 drop use
    assert out["recall/red"] == 0.0 and out["recall/yellow"] == 0.0 and out["recall/green"] == 1.0
    assert out["balanced_accuracy"] == pytest.approx(1 / 3)
    assert out["precision/green"] == pytest.approx(2 / 7) and out["precision/red"] != out["precision/red"]  # NaN
    assert out["confusion/red/green"] == 4 and out["lights/red"] == 4
    assert out["recall"] == 1.0  # detection alone is perfect: the old gate (recall >= 0.3) passed this head

    right = dict(all_green, state=gt["state"])
    m = TrafficLightMetric()
    m.update([right], [gt])
    out = m.compute()
    assert out["balanced_accuracy"] == 1.0 and out["recall/red"] == 1.0 and out["precision/red"] == 1.0

    # A missed red light counts against red recall (end to end), not only a misread one.
    m = TrafficLightMetric()
    m.update([{k: v[1:] for k, v in right.items()}], [gt])
    out = m.compute()
    assert out["recall/red"] == pytest.approx(3 / 4) and out["state_balanced_accuracy"] == 1.0
    assert out["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1) / 3)


def test_lights_called_where_there_are_none_count_as_false_and_lower_precision():
    """A frame without lights and a frame with one green light: two red and one green call match nothing. Only
    precision and ``false/<state>`` see them; balanced accuracy and recall count the lights that are there."""
    light = torch.tensor([[0.0, 0.0, 8.0, 20.0]])
    empty = {"boxes": torch.zeros(0, 4), "camera": torch.zeros(0, dtype=torch.long),
             "state": torch.zeros(0, dtype=torch.long)}
    one_green = {"boxes": light, "camera": torch.zeros(1, dtype=torch.long), "state": torch.tensor([2])}
    far = torch.tensor([[50.0, 0.0, 58.0, 20.0], [70.0, 0.0, 78.0, 20.0]])
    called_on_empty = {"boxes": far, "scores": torch.ones(2), "camera": torch.zeros(2, dtype=torch.long),
                       "state": torch.tensor([0, 0])}
    right_plus_one = {"boxes": torch.cat([light, far[:1]]), "scores": torch.ones(2),
                      "camera": torch.zeros(2, dtype=torch.long), "state": torch.tensor([2, 2])}
    m = TrafficLightMetric()
    m.update([called_on_empty, right_plus_one], [empty, one_green])
    out = m.compute()
    assert out["balanced_accuracy"] == 1.0 and out["recall"] == 1.0
    assert out["false/red"] == 2 and out["false/green"] == 1 and out["false/yellow"] == 0
    assert out["precision"] == pytest.approx(1 / 4) and out["precision/green"] == pytest.approx(1 / 2)
