"""A failed camera is masked (``camera_valid [B, N]``): fusion averages over the cameras that
remain, BEV cells the failed camera never saw are EXACTLY unchanged, camera heads mark it; a wrong camera
count is an error naming both counts; training draws camera dropout; suites can kill a camera."""

import pytest
import torch

from hydranet.data.sample import collate
from hydranet.eval.runner import dead_camera_mask
from hydranet.eval.suite import SuiteError, load_suite
from hydranet.model import ModelConfig, create_model
from hydranet.model.fusion import project_to_cameras
from hydranet.setup import default_rig
from hydranet.train.config import TrainConfig
from hydranet.train.trainer import camera_dropout_mask

H, W = 64, 128
GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": (H, W), "grid": GRID},
                             tasks={"drivable": {}, "bev_semantic": {}, "objects3d": {}})
    cfg.trunk.name = "regnet_tiny"
    return create_model(cfg).eval()


def inputs(b=2):
    rig = default_rig((H, W))
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (b, 8, 3, H, W), dtype=torch.uint8, generator=g)
    return images, rig.intrinsics()[None].repeat(b, 1, 1, 1), rig.extrinsics()[None].repeat(b, 1, 1, 1)


def seen_by(model, K, T, cam):
    """Coarse BEV cells [B, R, C] where camera ``cam`` sees at least one reference height."""
    s = model.fusion.sampler
    _, visible = project_to_cameras(s.points, K, T, (H, W), s.min_depth)
    R, C = s.grid.shape
    return visible[:, cam].reshape(K.shape[0], len(s.heights), R, C).any(1)


def with_pre_encoder_bev(model, store, *args, **kwargs):
    """``model(*args, **kwargs)``, keeping the sampler's output (the pre-encoder BEV) in ``store["bev"]``."""
    hook = model.fusion.sampler.register_forward_hook(lambda m, i, o: store.__setitem__("bev", o))
    try:
        return model(*args, **kwargs)
    finally:
        hook.remove()


@torch.no_grad()
def test_failed_camera_leaves_unseen_bev_cells_exactly_unchanged(model):
    images, K, T = inputs()
    full, masked, ones = {}, {}, {}
    out_full = with_pre_encoder_bev(model, full, images, K, T)
    with_pre_encoder_bev(model, ones, images, K, T, camera_valid=torch.ones(2, 8, dtype=torch.bool))
    assert torch.equal(full["bev"], ones["bev"])  # an all-True mask is no mask
    dead = 0  # the main camera
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[0, dead] = False  # only sample 0 loses it
    out = with_pre_encoder_bev(model, masked, images, K, T, camera_valid=valid)
    seen = seen_by(model, K, T, dead)[0]
    assert seen.any() and (~seen).any()
    a, b = full["bev"][0], masked["bev"][0]  # [C, R, C'] pre-encoder BEV
    assert torch.equal(a[:, ~seen], b[:, ~seen])  # exactly, not approximately
    assert not torch.equal(a[:, seen], b[:, seen])
    assert torch.equal(full["bev"][1], masked["bev"][1])  # the other sample is untouched
    assert torch.equal(out["drivable"]["camera_valid"], valid)  # camera heads: the dead camera is marked
    assert "camera_valid" not in out_full["drivable"]
    assert torch.isfinite(out["objects3d"]["heatmap"]).all()


@torch.no_grad()
def test_fusion_averages_over_the_remaining_cameras(model):
    images, K, T = inputs(1)
    feats = model.camera_features(images)
    s = model.fusion.sampler
    dead = torch.ones(1, 8, dtype=torch.bool)
    dead[0, 2] = False
    only = ~dead
    f_all, n_all = s.lift(feats, K, T, (H, W))
    f_rest, n_rest = s.lift(feats, K, T, (H, W), dead)
    f_one, n_one = s.lift(feats, K, T, (H, W), only)
    assert torch.equal(n_all, n_rest + n_one)  # counts: the dead camera leaves exactly its own points
    # mean over all = (sum over the rest + the dead camera's sample) / count: the rest are averaged alone
    total = f_rest * n_rest[:, None].clamp(min=1) + f_one * n_one[:, None]
    assert torch.allclose(f_all * n_all[:, None].clamp(min=1), total, atol=1e-4)
    where = (n_one[0] > 0) & (n_rest[0] > 0)
    assert where.any() and not torch.allclose(f_rest[0][:, where], f_all[0][:, where])


def test_wrong_camera_count_names_both_counts_and_bad_masks_are_refused(model):
    images, K, T = inputs()
    with pytest.raises(ValueError, match=r"inputs have 7 cameras but the model.s rigs are default \(8\).*camera_valid"):
        model(images[:, :7], K[:, :7], T[:, :7])
    with pytest.raises(ValueError, match=r"camera_valid must be bool \[B, N\] = \[2, 8\]"):
        model(images, K, T, camera_valid=torch.ones(2, 8))
    with pytest.raises(ValueError, match="camera_valid must be bool"):
        model(images, K, T, camera_valid=torch.ones(2, 7, dtype=torch.bool))


def test_camera_dropout_mask_is_seeded_and_keeps_a_camera():
    assert TrainConfig(camera_dropout=0.1).camera_dropout == 0.1
    with pytest.raises(ValueError):
        TrainConfig(camera_dropout=1.0)
    batch = collate([_sample(i) for i in range(4)])
    a = camera_dropout_mask(batch, 0.9, (0, 5, 0))
    assert torch.equal(a, camera_dropout_mask(batch, 0.9, (0, 5, 0)))  # same step -> same mask (resume)
    assert not torch.equal(a, camera_dropout_mask(batch, 0.9, (0, 6, 0)))
    assert a.dtype == torch.bool and a.shape == (4, 8) and a.any(1).all() and not a.all()
    rate = torch.stack([camera_dropout_mask(batch, 0.1, (0, s, 0)) for s in range(200)]).float().mean()
    assert 0.85 < rate < 0.95


def _sample(i):
    from hydranet.world import SyntheticWorld, WorldConfig

    world = _sample.world = getattr(_sample, "world", None) or SyntheticWorld(
        WorldConfig(seed=3, num_scenes=1, frames_per_scene=4, setup={"image_size": (16, 32)}))
    return world[i]


def test_dead_camera_suite_masks_and_blacks_out_the_camera(tmp_path):
    from pathlib import Path

    suite = load_suite(Path(__file__).resolve().parents[2] / "suites" / "dead_camera.yaml")
    assert suite.dead_cameras == ["main"]
    batch = collate([_sample(0), _sample(1)])
    mask = dead_camera_mask(suite, batch)
    assert mask.shape == (2, 8) and not mask[:, 0].any() and mask[:, 1:].all()
    assert batch.images[:, 0].max() == 0 and batch.images[:, 1].max() > 0
    bad = suite.model_copy(update={"dead_cameras": ["front_bumper"]})
    with pytest.raises(SuiteError, match="dead_cameras.*front_bumper"):
        dead_camera_mask(bad, batch)
