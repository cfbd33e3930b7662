"""A failed camera is masked (``camera_valid [B, N]``): fusion averages over the cameras that
remain, BEV cells the failed camera never saw are EXACTLY unchanged, camera heads mark it; a wrong camera
count is an error naming both counts; training draws camera dropout; suites can kill a camera."""

import pytest
import torch

from hydranet.data.sample import collate
from hydranet.eval.runner import dead_camera_mask
from hydranet.eval.suite import SuiteError, load_suite
from hydranet.geometry import BevGrid
from hydranet.model import ModelConfig, create_model
from hydranet.model.fusion import OUTSIDE, BevSampler, project_to_cameras
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


def _bev_outputs(model, images, K, T, camera_valid=None, pre_encoder=None):
    """The BEV heads' dense outputs ``{head.name: [B, C, h, w]}``, optionally replacing the pre-encoder BEV."""
    hook = None
    if pre_encoder is not None:
        hook = model.fusion.sampler.register_forward_hook(lambda m, i, o: pre_encoder(o))
    try:
        out = model(images, K, T, camera_valid=camera_valid)
    finally:
        if hook is not None:
            hook.remove()
    return {f"{task}.{name}": t for task in ("bev_semantic", "objects3d") for name, t in out[task].items()
            if torch.is_tensor(t) and t.dim() == 4}


def _dilate(mask, radius):
    return torch.nn.functional.max_pool2d(mask.float()[:, None], 2 * radius + 1, 1, radius)[:, 0] > 0


@torch.no_grad()
def test_failed_camera_changes_no_bev_output_beyond_its_footprint():
    """Every BEV head output cell farther from the dead camera's footprint than the BEV path's receptive field
    is bit-identical (no normalisation mixes the grid: BatchNorm, not GroupNorm, in the BEV encoder and heads).
    The receptive field is probed on the same model: a change to one pre-encoder cell reaches a bounded
    neighbourhood, far smaller than the grid (GroupNorm over the grid would reach every cell)."""
    torch.manual_seed(0)
    grid = {"x_range": (-32.0, 32.0), "y_range": (-32.0, 32.0), "cell": 1.0}
    cfg = ModelConfig.preset("tiny", setup={"image_size": (H, W), "grid": grid},
                             tasks={"bev_semantic": {}, "objects3d": {}})
    cfg.trunk.name = "regnet_tiny"
    net = create_model(cfg).eval()
    for m in net.modules():  # trained-looking statistics, so normalisation is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    images, K, T = inputs(1)
    base = _bev_outputs(net, images, K, T)
    # The receptive field, in output cells: perturb the centre cell of the pre-encoder BEV.
    def poke(bev):
        bev[..., bev.shape[-2] // 2, bev.shape[-1] // 2] += 10.0
    poked = _bev_outputs(net, images, K, T, pre_encoder=poke)
    radius = 0
    for name, t in base.items():
        changed = (t != poked[name]).any(1)[0]
        rows, cols = torch.nonzero(changed, as_tuple=True)
        h, w = changed.shape
        radius = max(radius, int((rows - h // 2).abs().max()), int((cols - w // 2).abs().max()))
    h, w = next(iter(base.values())).shape[-2:]
    assert 0 < radius < min(h, w) // 3, f"a one-cell change reaches {radius} cells of a {h}x{w} grid"
    # The dead camera: the main camera of sample 0.
    valid = torch.ones(1, 8, dtype=torch.bool)
    valid[0, 0] = False
    dead = _bev_outputs(net, images, K, T, camera_valid=valid)
    seen = seen_by(net, K, T, 0)  # coarse cells [1, R, C]
    for name, t in base.items():
        footprint = torch.nn.functional.interpolate(seen.float()[:, None], size=t.shape[-2:], mode="nearest")[:, 0]
        outside = ~_dilate(footprint, radius + 1)
        assert outside.sum() > outside.numel() // 4, name  # most of the grid is outside: the check has teeth
        diff = (t != dead[name]).any(1)
        assert not diff[outside].any(), f"{name}: {int(diff[outside].sum())} cells outside the footprint changed"
        assert diff.any(), name  # inside the footprint the outputs do change


def test_projection_masks_a_failed_camera():
    # camera_valid enters the projection itself: a failed camera sees no point, every one of its coordinates
    # is OUTSIDE (so grid_sample reads exact zeros there), and the other cameras' projections are untouched.
    s = BevSampler(BevGrid(**GRID), 8, 8, [0.5, 1.5], ["p3"])
    _, K, T = inputs()
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[1, 3] = False
    coords, visible = project_to_cameras(s.points, K, T, (H, W), s.min_depth)
    masked_coords, masked_visible = project_to_cameras(s.points, K, T, (H, W), s.min_depth, valid)
    assert visible[1, 3].any() and not masked_visible[1, 3].any()
    assert bool((masked_coords[1, 3] == OUTSIDE).all())
    keep = valid[:, :, None].expand_as(visible)
    assert torch.equal(masked_visible[keep], visible[keep]) and torch.equal(masked_coords[keep], coords[keep])
