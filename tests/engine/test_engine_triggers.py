"""Each built-in trigger on hand-made outputs whose right answer is known, plus the registry."""

from __future__ import annotations

import pytest
import torch

from hydranet.data.sample import collate
from hydranet.engine.pool import open_pool
from hydranet.engine.triggers import (
    BatchContext,
    FrameContext,
    Score,
    Trigger,
    TriggerError,
    create_trigger,
    parse_trigger_specs,
    register_trigger,
)
from hydranet.engine.triggers.base import TRIGGERS
from hydranet.engine.triggers.projection import project_boxes3d
from hydranet.eval.loop import Prediction


@pytest.fixture(scope="module")
def batch(world_yaml):
    pool = open_pool(str(world_yaml))
    return collate([pool[0], pool[1]])


class _Model:
    """Just enough of a model for triggers that read decoded outputs handed to the context."""

    def __init__(self, tasks=None):
        self.task_objects = tasks or {}


def ctx_with(batch, decoded=None, probs=None, outputs=None, meta=None, model=None):
    model = model or _Model()
    prediction = Prediction(batch, outputs or {}, model.task_objects)
    prediction._decoded.update(decoded or {})
    prediction._probabilities.update(probs or {})
    return BatchContext(prediction, model, meta or [{} for _ in range(len(batch))])


def test_parse_specs_weights_and_options():
    specs = parse_trigger_specs("entropy:task=drivable, flicker*3,condition:name=night*2,rare:classes=cone|pedestrian")
    assert specs == [("entropy", 1.0, {"task": "drivable"}), ("flicker", 3.0, {}),
                     ("condition", 2.0, {"name": "night"}), ("rare", 1.0, {"classes": ["cone", "pedestrian"]})]
    with pytest.raises(TriggerError, match="not a number"):
        parse_trigger_specs("flicker*x:min_score=1")
    with pytest.raises(TriggerError, match="key=value"):
        parse_trigger_specs("entropy:drivable")


def test_unknown_trigger_and_bad_option_name_the_trigger():
    with pytest.raises(TriggerError, match="unknown trigger 'nope'.*registered triggers"):
        create_trigger("nope")
    with pytest.raises(TriggerError, match="trigger 'flicker': bad options"):
        create_trigger("flicker", bogus=1)
    with pytest.raises(TriggerError, match="needs task"):
        create_trigger("projection").check(["drivable"])


def test_a_new_trigger_is_one_class(batch):
    @register_trigger
    class Always(Trigger):
        name = "test_always"

        def score(self, frame):
            return Score(0.7, f"always {frame.frame_id}")

    try:
        t = create_trigger("test_always")
        s = t.score(FrameContext(ctx_with(batch), 1))
        assert s.value == 0.7 and s.reason == f"always {batch.scene_id[1]}#1"
    finally:
        TRIGGERS.pop("test_always")


def test_entropy_dense_is_high_for_coin_flips_and_zero_for_certainty(batch):
    t = create_trigger("entropy", task="drivable")
    n, h, w = batch.images.shape[1], *batch.images.shape[-2:]
    ctx = ctx_with(batch, probs={"drivable": [torch.full((n, h, w), 0.5), torch.full((n, h, w), 0.99)]})
    assert t.score(FrameContext(ctx, 0)).value == 1.0
    assert t.score(FrameContext(ctx, 1)).value == 0.0


def _light_ctx(batch, s0, s1):
    """One light in camera 0 with state probabilities s0 (frame 0) / s1 (frame 1), as the task decodes it."""
    H, W = batch.images.shape[-2:]
    box = torch.tensor([[W / 2 - 2, H / 2 - 4, W / 2 + 2, H / 2 + 4]])
    dec = [{"boxes": box, "scores": torch.tensor([0.9]), "state": torch.tensor([int(torch.tensor(s).argmax())]),
            "state_probs": torch.tensor([s]), "camera": torch.tensor([0]), "lane": torch.tensor([0])}
           for s in (s0, s1)]
    return ctx_with(batch, decoded={"traffic_light": dec})


def test_light_margin_flags_a_light_between_two_states(batch):
    t = create_trigger("light_margin")
    ctx = _light_ctx(batch, [0.8, 0.78, 0.05], [0.9, 0.05, 0.05])
    ambiguous, clear = t.score(FrameContext(ctx, 0)), t.score(FrameContext(ctx, 1))
    assert ambiguous.value > 0.95 and "red or yellow" in ambiguous.reason
    assert clear.value < 0.2


def test_flicker_counts_state_changes_only_within_a_sequence(batch):
    t = create_trigger("flicker")
    t.check(["traffic_light"])
    ctx = _light_ctx(batch, [0.9, 0.05, 0.05], [0.05, 0.05, 0.9])  # red then green, same box
    first, second = t.score(FrameContext(ctx, 0)), t.score(FrameContext(ctx, 1))
    assert first.value == 0.0 and "first frame" in first.reason
    assert second.value == 1.0 and "red→green" in second.reason
    stable = create_trigger("flicker")
    stable.check(["traffic_light"])
    ctx = _light_ctx(batch, [0.9, 0.05, 0.05], [0.8, 0.05, 0.05])
    stable.score(FrameContext(ctx, 0))
    assert stable.score(FrameContext(ctx, 1)).value == 0.0


def test_projection_agrees_when_2d_sees_the_projected_3d_box(batch):
    box3d = torch.tensor([[12.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0]])  # a car 12 m ahead
    proj, cam, _ = project_boxes3d(box3d, batch.intrinsics[0], batch.T_ego_from_cam[0], tuple(batch.images.shape[-2:]))
    assert len(proj) >= 1 and 0 in cam.tolist()  # the front camera sees it
    d3 = {"boxes": box3d, "scores": torch.tensor([0.9]), "classes": torch.tensor([0]), "velocity": torch.zeros(1, 2)}
    seen = {"boxes": proj, "scores": torch.full((len(proj),), 0.9), "classes": torch.zeros(len(proj)).long(),
            "camera": cam}
    unseen = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "classes": torch.zeros(0).long(),
              "camera": torch.zeros(0).long()}
    ctx = ctx_with(batch, decoded={"objects3d": [d3, d3], "detection2d": [seen, unseen]})
    t = create_trigger("projection")
    assert t.score(FrameContext(ctx, 0)).value == 0.0
    s = t.score(FrameContext(ctx, 1))
    assert s.value == 1.0 and "unseen by the 2D detector" in s.reason


def test_depth_box_flags_depth_that_sees_through_a_box(batch):
    box3d = torch.tensor([[12.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0]])
    d3 = {"boxes": box3d, "scores": torch.tensor([0.9]), "classes": torch.tensor([0]), "velocity": torch.zeros(1, 2)}
    n, h, w = batch.images.shape[1], *batch.images.shape[-2:]
    ctx = ctx_with(batch, decoded={"objects3d": [d3, d3],
                                   "depth": [torch.full((n, h, w), 11.0), torch.full((n, h, w), 60.0)]})
    t = create_trigger("depth_box")
    assert t.score(FrameContext(ctx, 0)).value == 0.0
    assert t.score(FrameContext(ctx, 1)).value == 1.0


def test_drivable_consistency_compares_camera_and_bev(batch, checkpoint):
    from hydranet.engine.pool import load_mining_model

    model = load_mining_model(checkpoint)
    n, h, w = batch.images.shape[1], *batch.images.shape[-2:]
    rows, cols = model.setup.grid.shape
    bev = torch.zeros(6, rows, cols)
    bev[0] = 1.0  # the BEV head calls every cell drivable
    ctx = ctx_with(batch, model=model, probs={"drivable": [torch.ones(n, h, w), torch.zeros(n, h, w)],
                                              "bev_semantic": [bev, bev]})
    t = create_trigger("drivable_consistency")
    assert t.score(FrameContext(ctx, 0)).value == 0.0
    assert t.score(FrameContext(ctx, 1)).value == 1.0


def test_rare_uses_detection_scores(batch):
    cone = {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "scores": torch.tensor([0.9]), "classes": torch.tensor([3]),
            "camera": torch.tensor([0])}
    car = {**cone, "classes": torch.tensor([0])}
    ctx = ctx_with(batch, decoded={"detection2d": [cone, car]})
    t = create_trigger("rare", classes="cone", states=None)
    t.check(["detection2d"])
    assert t.score(FrameContext(ctx, 0)).value == pytest.approx(0.9)
    assert t.score(FrameContext(ctx, 1)).value == 0.0
    with pytest.raises(TriggerError, match="unknown class"):
        create_trigger("rare", classes="unicorn")


def test_condition_prefers_metadata_and_falls_back_to_the_images(batch):
    t = create_trigger("condition", name="night")
    ctx = ctx_with(batch, meta=[{"lighting": "night"}, {"lighting": "day"}])
    assert [t.score(FrameContext(ctx, i)).value for i in (0, 1)] == [1.0, 0.0]
    dark = collate([batch_sample(batch, 0, scale=0.1), batch_sample(batch, 1, scale=1.0)])
    ctx = ctx_with(dark)
    s = t.score(FrameContext(ctx, 0))
    assert s.value > 0.5 and "from the images" in s.reason


def batch_sample(batch, i, scale):
    from hydranet.data.sample import Sample

    return Sample(images=(batch.images[i].float() * scale).to(torch.uint8), intrinsics=batch.intrinsics[i],
                  T_ego_from_cam=batch.T_ego_from_cam[i], T_world_from_ego=batch.T_world_from_ego[i],
                  timestamp=0.0, scene_id="s", camera_names=batch.camera_names)
