"""Training aids and operating points: Gaussian radius floor, log-size prior, lane decode threshold,
pictures that show only confident boxes while decode keeps the low-score tail for AP."""

from __future__ import annotations

import math

import numpy as np
import torch
from tasks_synthetic import GRID, N_CAM, SETUP, H, W, context, make_batch, perfect_outputs

from hydranet.tasks import create_task
from hydranet.tasks.centernet2d import encode_boxes2d
from hydranet.tasks.heatmaps import above_threshold
from hydranet.viz import CLASS_COLORS, Views

torch.set_num_threads(1)


def _tiny_box_heatmap(min_radius: int) -> torch.Tensor:
    # A 6x6 px box is 1.5 cells at stride 4: min_overlap 0.7 alone gives radius 0.
    objects = [(torch.tensor([[20.0, 8.0, 26.0, 14.0]]), torch.tensor([0]), torch.tensor([2]),
                torch.tensor([True]))]
    return encode_boxes2d(objects, N_CAM, 5, (H // 4, W // 4), 4, (H, W), 0.7, "cpu", min_radius).heatmap[0, 0, 2]


def test_min_radius_spreads_small_objects_peak():
    lone = _tiny_box_heatmap(0)
    spread = _tiny_box_heatmap(1)
    assert int((lone > 0).sum()) == 1
    assert int((spread > 0).sum()) == 9  # the 3x3 neighbourhood
    assert float(spread.max()) == 1.0 and int(spread.eq(1.0).sum()) == 1  # still one positive, same cell
    assert torch.equal(lone.eq(1.0), spread.eq(1.0))
    assert float(spread.flatten().sort(descending=True).values[1]) < 0.5  # neighbours are soft negatives


def test_box_heads_start_at_the_prior_size():
    for name, size in (("detection2d", 12.0), ("traffic_light", 6.0)):
        task = create_task(name, SETUP)
        head = task.build_head(context())
        bias = head.head.branches["log_size"][-1].bias
        assert torch.allclose(bias, torch.full_like(bias, math.log(size / task.stride)))
        task = create_task(name, SETUP, prior_size_px=32.0)
        bias = task.build_head(context()).head.branches["log_size"][-1].bias
        assert torch.allclose(bias, torch.full_like(bias, math.log(32.0 / task.stride)))


def test_lanes_decode_asks_marking_before_kind():
    batch = make_batch(1)
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])  # argmax says "none", but a marking is 60 % likely
    logits = probs.log()[None, None, :, None, None].expand(1, N_CAM, 4, H // 4, W // 4).contiguous()
    assert bool((create_task("lanes", SETUP).decode({"logits": logits}, batch)[0] == 1).all())  # dashed
    assert bool((create_task("lanes", SETUP, threshold=0.7).decode({"logits": logits}, batch)[0] == 0).all())


def test_draw_threshold_hides_low_scores_but_decode_keeps_them():
    batch = make_batch(1)
    for name in ("detection2d", "objects3d"):
        task = create_task(name, SETUP)
        task.build_head(context())
        decoded = task.decode(perfect_outputs(name, batch), batch)[0]
        assert len(decoded["boxes"]) > 0
        low = {k: v for k, v in decoded.items()}
        low["scores"] = torch.full_like(decoded["scores"], 0.2)  # above score_threshold, below draw_threshold
        assert task.cfg.score_threshold < 0.2 < task.cfg.draw_threshold
        kept = above_threshold(low, task.cfg.draw_threshold)
        assert len(kept["boxes"]) == 0 and len(above_threshold(low, 0.1)["boxes"]) == len(decoded["boxes"])
        views = Views.from_batch(batch, 0, GRID, scale=1)
        blank = np.concatenate([np.asarray(im) for im in views.cameras]).copy()
        task.draw(views, low)
        assert np.array_equal(np.concatenate([np.asarray(im) for im in views.cameras]), blank)
        # The picture says why it is empty: the boxes are below the threshold, not absent (a new-user trial).
        assert f"{name}: 0 detections with score >= {task.cfg.draw_threshold:g} ({len(low['boxes'])} below it)" \
            in views.notes
        task.draw(views, decoded)  # perfect decodes score ~1: drawn
        pixels = np.concatenate([np.asarray(im).reshape(-1, 3) for im in [*views.cameras, views.bev]])
        assert any(bool((pixels == np.array(c)).all(-1).any()) for c in CLASS_COLORS.values())


def test_traffic_light_decode_is_an_operating_point():
    task = create_task("traffic_light", SETUP)
    assert task.cfg.score_threshold == 0.3  # its metric scores the decoded set, unlike AP
    assert create_task("detection2d", SETUP).cfg.score_threshold == 0.1  # AP needs the low-score tail
