"""The video memory: warp geometry, the two queues' push rules, state reset, streamed == batched."""


import pytest
import torch
from hydranet_model_testkit import BEV, rig_inputs, tiny_config

from hydranet.data.sample import Sample, collate
from hydranet.eval.loop import EagerPredictor, Streamer
from hydranet.geometry import BevGrid, invert_transform, transform_points, yaw_transform
from hydranet.model import create_model
from hydranet.model.temporal import TemporalMemory, TemporalState, ego_velocity, rigid_inverse, warp_bev
from hydranet.setup import default_rig

GRID = BevGrid((-8.0, 8.0), (-8.0, 8.0), 1.0)


def test_warp_bev_compensates_ego_motion():
    prev = torch.randn(1, 3, *GRID.shape)
    same, valid = warp_bev(prev, torch.eye(4)[None], GRID)
    assert torch.allclose(same, prev, atol=1e-6) and valid.all()
    # The car drove 2 m forward: a current cell at x is the previous cell at x + 2, i.e. 2 rows up.
    T = torch.eye(4)[None]
    T[0, 0, 3] = 2.0
    moved, valid = warp_bev(prev, T, GRID)
    assert torch.allclose(moved[..., 2:, :], prev[..., :-2, :], atol=1e-5)
    assert not valid[..., :2, :].any() and valid[..., 2:, :].all()
    # A 90° turn left: the current +x axis is the previous +y axis, so what was on the left (column 0)
    # is now ahead (row 0): the BEV image turns clockwise.
    yaw = torch.tensor([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    rot, _ = warp_bev(prev, yaw[None], GRID)
    assert torch.allclose(rot, torch.rot90(prev, -1, (-2, -1)), atol=1e-5)


@pytest.mark.parametrize("motion", [(0.0, 0.0, 0.0), (3.0, 0.0, 0.0), (2.5, 1.0, 0.3), (1.0, -2.0, -0.6)])
def test_a_static_world_point_stays_on_its_bev_cell_after_ego_motion(motion):
    grid = BevGrid((-16.0, 16.0), (-16.0, 16.0), 0.5)
    T_world_from_prev = yaw_transform(100.0, -40.0, 0.7)  # far from the world origin, like a real sequence
    dx, dy, dyaw = motion
    T_world_from_curr = T_world_from_prev @ yaw_transform(dx, dy, dyaw)
    point_prev = torch.tensor([[4.25, -2.75, 0.0]], dtype=torch.float64)  # a cell centre of the previous grid
    prev = torch.zeros(1, 1, *grid.shape)
    r, c, _ = grid.cell_indices(point_prev[:, 0], point_prev[:, 1])
    prev[0, 0, r, c] = 1.0
    # The memory module computes the relative motion from the two world poses, in float32.
    T_prev_from_curr = rigid_inverse(T_world_from_prev.float()[None]) @ T_world_from_curr.float()[None]
    warped, _ = warp_bev(prev, T_prev_from_curr, grid)
    point_curr = transform_points(invert_transform(T_world_from_curr) @ T_world_from_prev, point_prev)
    rc, cc, inside = grid.cell_indices(point_curr[:, 0], point_curr[:, 1])
    assert inside.all()
    peak = divmod(int(warped.flatten().argmax()), grid.cols)
    assert peak == (int(rc), int(cc))
    assert float(warped.sum()) == pytest.approx(1.0, abs=0.35)  # bilinear spreads, but nothing is lost


def _step(mem: TemporalMemory, state: TemporalState, x: float, t: float) -> TemporalState:
    bev = torch.randn(1, mem.channels, *mem.grid.shape)
    _, state = mem(bev, yaw_transform(x, 0.0, 0.0).float()[None], torch.tensor([t]), state)
    return state


def test_ego_velocity_is_the_odometry_in_the_current_ego_frame():
    # The ego drives 2 m along its own heading (yaw 0.7 in the world) in 0.2 s, then turns 90° left in place.
    past = yaw_transform(100.0, -40.0, 0.7).float()[None]
    ahead = past @ yaw_transform(2.0, 0.0, 0.0).float()[None]
    v = ego_velocity(ahead, past, torch.tensor([0.2]), torch.tensor([1.0]))
    assert torch.allclose(v, torch.tensor([[10.0, 0.0]]), atol=1e-3)
    turned = ahead @ yaw_transform(0.0, 0.0, torch.pi / 2).float()[None]
    v = ego_velocity(turned, past, torch.tensor([0.2]), torch.tensor([1.0]))
    assert torch.allclose(v, torch.tensor([[0.0, -10.0]]), atol=1e-3)  # the past motion is now to the right
    # An empty slot (no history) and a zero interval give no velocity, never inf.
    assert ego_velocity(ahead, torch.zeros(1, 4, 4), torch.tensor([0.0]), torch.tensor([0.0])).eq(0).all()
    assert torch.isfinite(ego_velocity(ahead, past, torch.tensor([0.0]), torch.tensor([1.0]))).all()


def test_time_queue_pushes_every_k_frames_and_space_queue_every_d_metres():
    mem = TemporalMemory(GRID, 4, time_queue=2, space_queue=2, push_every_frames=2, push_every_metres=3.0).eval()
    state = mem.init_state(1)
    assert state.queue_valid.sum() == 0
    # Drive at 1 m per frame for 6 frames, then stand still (a red light) for 10 frames.
    xs = [float(i) for i in range(6)] + [5.0] * 10
    space_times = []
    with torch.no_grad():
        for i, x in enumerate(xs):
            state = _step(mem, state, x, 0.1 * i)
            space_times.append(state.queue_time[0, 2:].tolist())
    # Time queue: frames 0, 2, 4, ... pushed; the last push is frame 14 and the one before frame 12.
    assert state.queue_time[0, :2].tolist() == pytest.approx([1.4, 1.2])
    # Space queue: pushed at x = 0 and x = 3 (frames 0 and 3); standing still never pushes, so after 10
    # stopped frames it still holds what was seen while moving.
    assert state.queue_time[0, 2:].tolist() == pytest.approx([0.3, 0.0])
    assert space_times[5] == space_times[-1]
    assert state.queue_valid.sum() == 4


def test_state_reset_and_reset_where():
    mem = TemporalMemory(GRID, 4).eval()
    state = mem.init_state(2)
    with torch.no_grad():
        bev = torch.randn(2, 4, *GRID.shape)
        _, state = mem(bev, torch.eye(4).expand(2, 4, 4), torch.zeros(2), state)
    assert state.queue_valid[:, 0].tolist() == [1.0, 1.0]
    reset = state.reset_where(torch.tensor([True, False]))
    fresh = mem.init_state(1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(reset.tensors(), fresh.tensors(), strict=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(reset.tensors(), state.tensors(), strict=True))
    with pytest.raises(ValueError, match="state.queue must have shape"):
        mem(bev, torch.eye(4).expand(2, 4, 4), torch.zeros(2), mem.init_state(2).__class__(
            *state.tensors()[:2], state.queue[:, :1], *state.tensors()[3:]))


def temporal_model():
    torch.manual_seed(0)
    m = create_model(tiny_config(fusion={"temporal": {"time_queue": 1, "space_queue": 1}, "channels": 16,
                                         "heights": [0.0, 1.0]}))
    torch.nn.init.normal_(m.fusion.temporal.out.weight, std=0.1)  # zero at init: make history visible
    return m.eval()


def sequence(scene: str, frames: int, seed: int, speed: float = 1.0) -> list[Sample]:
    rig = default_rig((64, 128))
    out = []
    for i in range(frames):
        images, _, _ = rig_inputs(1, seed=seed * 100 + i)
        pose = yaw_transform(speed * i, 0.1 * i, 0.02 * i).float()
        out.append(Sample(images[0], rig.intrinsics(), rig.extrinsics(), pose, 0.1 * i, scene, rig.names, i))
    return out


def test_history_changes_outputs_and_stream_resets_at_a_new_scene():
    m = temporal_model()
    stream = Streamer(EagerPredictor(m))
    a = sequence("a", 3, 1)
    with torch.no_grad():
        first = stream(collate([a[0]]), [BEV])[BEV]["logits"]
        assert torch.allclose(first, m(*(lambda b: (b.images, b.intrinsics, b.T_ego_from_cam))(collate([a[0]])),
                                       tasks=[BEV])[BEV]["logits"], atol=1e-6)  # no history = forward
        stream(collate([a[1]]), [BEV])
        with_history = stream(collate([a[2]]), [BEV])[BEV]["logits"]
        stream.reset()
        alone = stream(collate([a[2]]), [BEV])[BEV]["logits"]
        assert not torch.allclose(with_history, alone, atol=1e-4)
        # A new scene in the same row resets that row: the first frame of scene "b" sees no history.
        b0 = sequence("b", 1, 2)[0]
        stream.reset()
        fresh = stream(collate([b0]), [BEV])[BEV]["logits"]
        stream.reset()
        stream(collate([a[0]]), [BEV])
        after_a = stream(collate([b0]), [BEV])[BEV]["logits"]
        assert torch.allclose(fresh, after_a, atol=1e-6)
        with pytest.raises(ValueError, match="batch size changed"):
            stream(collate([b0, b0]), [BEV])
    assert not any(isinstance(v, TemporalState) for v in vars(m).values())  # the state lives in the Streamer


def test_streamed_one_sequence_at_a_time_equals_batched_sequences():
    m = temporal_model()
    stream = Streamer(EagerPredictor(m))
    seqs = [sequence("a", 4, 1, speed=1.5), sequence("b", 4, 2, speed=0.0)]
    with torch.no_grad():
        batched = []
        for i in range(4):
            batched.append(stream(collate([seqs[0][i], seqs[1][i]]), [BEV])[BEV]["logits"])
        for k, seq in enumerate(seqs):
            stream.reset()
            for i, s in enumerate(seq):
                alone = stream(collate([s]), [BEV])[BEV]["logits"]
                assert torch.allclose(alone[0], batched[i][k], atol=1e-5), (k, i)


def test_single_frame_model_rejects_forward_step_and_bev_free_requests_keep_the_state():
    m = create_model(tiny_config())
    images, K, T = rig_inputs(1)
    with pytest.raises(ValueError, match="video memory"):
        m.forward_step(images, K, T, torch.eye(4)[None], torch.zeros(1), None)
    t = temporal_model()
    state = t.init_state(1)
    out, same = t.forward_step(images, K, T, torch.eye(4)[None], torch.zeros(1), state, tasks=[])
    assert out == {} and same is state


def test_local_correlation_peaks_at_the_displacement():
    """A map moved by (dy, dx) = (1, -2) cells correlates fully at that displacement, nowhere else as well."""
    from hydranet.model.temporal import local_correlation

    torch.manual_seed(0)
    prev = torch.randn(1, 8, 12, 12)
    cur = torch.roll(prev, shifts=(-1, 2), dims=(2, 3))  # cur[y, x] = prev[y + 1, x - 2]
    corr = local_correlation(cur, prev, radius=2)  # channel (dy + 2) * 5 + (dx + 2)
    assert corr.shape == (1, 25, 12, 12)
    inner = corr[0, :, 3:-3, 3:-3]
    best = inner.argmax(0)
    assert bool((best == (1 + 2) * 5 + (-2 + 2)).all())
    torch.testing.assert_close(inner[(1 + 2) * 5 + 0], torch.ones(6, 6))


def test_local_correlation_broadcasts_leading_dimensions_and_normalises_like_f_normalize():
    """One current map against several entries at once equals each pair alone; the channel normalisation is
    ``F.normalize``'s, zero vectors included (they correlate 0, never NaN)."""
    from hydranet.model.temporal import local_correlation, unit_channels

    torch.manual_seed(0)
    cur, entries = torch.randn(2, 8, 6, 7), torch.randn(2, 3, 8, 6, 7)
    cur[0, :, 2, 3] = 0.0
    together = local_correlation(cur[:, None], entries, radius=1)
    assert together.shape == (2, 3, 9, 6, 7) and torch.isfinite(together).all()
    for k in range(3):
        torch.testing.assert_close(together[:, k], local_correlation(cur, entries[:, k], radius=1))
    torch.testing.assert_close(unit_channels(cur), torch.nn.functional.normalize(cur, dim=1, eps=1e-6))
    torch.testing.assert_close(unit_channels(entries, 2), torch.nn.functional.normalize(entries, dim=2, eps=1e-6))


def test_bev_warp_gives_exact_zeros_off_the_grid_and_for_maps_not_held():
    """A cell whose centre lands outside the previous grid reads exactly 0, even within half a cell of its
    border (where bilinear zero padding alone would leak a fraction of the edge); a map not held reads 0
    everywhere and is invalid everywhere."""
    from hydranet.model.temporal import BevWarp

    warp = BevWarp(GRID)
    prev = torch.ones(2, 3, *GRID.shape)
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, 0, 3] = 0.75  # drove 0.75 m forward: the front row's centre (row 0) lands 0.25 m past the previous grid
    warped, valid = warp(prev, T, torch.tensor([1.0, 0.0]))
    assert valid.shape == (2, 1, *GRID.shape)
    assert bool(valid[0, 0, 1:].eq(1).all()) and bool(valid[0, 0, 0].eq(0).all()) and bool(valid[1].eq(0).all())
    assert bool(warped[0, :, 0].eq(0).all()) and bool(warped[1].eq(0).all())
    torch.testing.assert_close(warped[0, :, 1:], torch.ones(3, GRID.shape[0] - 1, GRID.shape[1]))
    same, _ = warp_bev(prev[:1], T[:1], GRID)
    torch.testing.assert_close(same, warped[:1])


def test_soft_flow_reads_the_displacement_of_a_moved_blob():
    """A textured blob that moved (dy, dx) = (1, -2) cells since the previous map: the soft-argmax of the cost
    volume at its current cells is (-1, 2), where it was; the empty background reads no motion."""
    from hydranet.model.temporal import local_correlation, soft_flow

    prev = torch.zeros(1, 8, 16, 16)
    prev[0, :, 6:8, 9:11] = torch.randn(8, 2, 2, generator=torch.Generator().manual_seed(0))  # a textured blob
    cur = torch.roll(prev, shifts=(1, -2), dims=(2, 3))
    flow, confidence = soft_flow(local_correlation(cur, prev, radius=2), 2, torch.tensor(50.0))
    torch.testing.assert_close(flow[0, :, 7:9, 7:9], torch.tensor([-1.0, 2.0]).view(2, 1, 1).expand(2, 2, 2),
                               atol=1e-3, rtol=0)
    assert float(confidence[0, 0, 7, 7]) > 0.99
    assert float(flow[0, :, 0, 0].abs().max()) < 1e-6 and float(confidence[0, 0, 0, 0]) < 0.05


def test_the_memory_keeps_the_encoded_bev_at_fusion_resolution():
    """The memory sits after the BEV encoder's residual stages: the entry a frame pushes is the encoded
    map (``bev_channels`` on the fusion grid), not the sampler's depth-less map."""
    model = temporal_model().eval()
    images, K, T = rig_inputs(1)
    fusion = model.fusion
    with torch.no_grad():
        _, state = model.forward_step(images, K, T, torch.eye(4)[None], torch.zeros(1), model.init_state(1))
        feats = model.camera_features(images)
        encoded = fusion.encoder.encode(fusion.sampler(feats, K, T, tuple(images.shape[-2:])))
    assert fusion.temporal.channels == fusion.encoder.out[0].out_channels != fusion.sampler.reduce[0].out_channels
    assert state.queue.shape[2:] == encoded.shape[1:] and encoded.shape[-2:] == fusion.sampler.grid.shape
    torch.testing.assert_close(state.queue[:, 0], encoded.float())
