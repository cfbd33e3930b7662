"""Box regression around the peak (``regress_radius``): which cells, which targets, and what it buys at decode."""

from __future__ import annotations

import torch
from tasks_synthetic import GRID, N_CAM, SETUP, H, W, context, make_batch, perfect_outputs

from hydranet.tasks import create_task
from hydranet.tasks.centernet2d import clip_boxes, encode_boxes2d, pred_boxes_at
from hydranet.tasks.common import regression_cells
from hydranet.tasks.objects3d import _REG, encode_objects3d

torch.set_num_threads(1)


def test_radius_0_is_the_peaks_alone():
    row, dy, dx, weight = regression_cells([(0,), (0,)], [2, 5], [3, 1], [(2.5, 3.5), (5.2, 1.7)], (8, 8), 0)
    assert row.tolist() == [0, 1] and dy.tolist() == [0, 0] and dx.tolist() == [0, 0]
    assert weight.tolist() == [1.0, 1.0]


def test_neighbours_go_to_the_nearest_centre_and_every_object_weighs_one():
    # Two objects one cell apart on map (0, 0), one on another camera at the same cells, one at a map corner.
    groups = [(0, 0), (0, 0), (0, 1), (0, 0)]
    ys, xs = [3, 3, 3, 0], [4, 5, 4, 0]
    centres = [(3.5, 4.2), (3.5, 5.9), (3.5, 4.5), (0.1, 0.1)]
    row, dy, dx, weight = regression_cells(groups, ys, xs, centres, (8, 10), 1)
    cells = [(*groups[i], ys[i] + a, xs[i] + b) for i, a, b in zip(row.tolist(), dy.tolist(), dx.tolist(),
                                                                     strict=True)]
    assert len(cells) == len(set(cells)), "a cell is regressed for two objects"
    for i in range(4):
        assert (*groups[i], ys[i], xs[i]) in [c for c, r in zip(cells, row.tolist(), strict=True) if r == i]
        torch.testing.assert_close(weight[row == i].sum(), torch.tensor(1.0))
    assert all(0 <= c[2] < 8 and 0 <= c[3] < 10 for c in cells)
    assert (row == 3).sum() == 4  # the corner object keeps the 2 x 2 cells inside the map
    # Column 3 is nearer object 0's centre (x 4.2), column 6 nearer object 1's (x 5.9); neither takes the other's
    # peak; object 2, on another camera, keeps all nine of its cells.
    owner = {c[2:]: r for c, r in zip(cells, row.tolist(), strict=True) if c[:2] == (0, 0)}
    assert owner[(3, 3)] == 0 and owner[(3, 6)] == 1 and owner[(3, 4)] == 0 and owner[(3, 5)] == 1
    assert (row == 2).sum() == 9


def _objects2d(batch):
    return [(t["boxes"], t["camera"], t["classes"], torch.ones(len(t["boxes"]), dtype=torch.bool))
            for t in batch.labels["detection2d"]]


def test_every_regression_cell_targets_its_objects_box():
    batch = make_batch(2)
    enc = encode_boxes2d(_objects2d(batch), N_CAM, 5, (H // 4, W // 4), 4, (H, W), regress_radius=2)
    sample, camera, ys, xs, offset, log_size, box, weight = enc.regression_targets()
    assert len(sample) > 2 * len(enc.sample)
    torch.testing.assert_close(pred_boxes_at(offset, log_size, ys, xs), box)
    assert bool((offset.abs() <= 3).all())


def _outputs_at_cells(enc, b: int, h: int, w: int) -> dict:
    sample, camera, ys, xs, offset, log_size, _, _ = enc.regression_targets()
    out = {"offset": torch.zeros(b, N_CAM, 2, h, w), "log_size": torch.zeros(b, N_CAM, 2, h, w)}
    out["offset"][sample, camera, :, ys, xs] = offset
    out["log_size"][sample, camera, :, ys, xs] = log_size
    return out


def test_a_peak_decoded_one_cell_off_reads_the_true_box():
    """The reason for the option: the heatmap's maximum lands a cell beside the centre, and the box read there
    is still the object's; at the peak alone (radius 0) the cell beside it holds no box."""
    batch = make_batch(1)
    gt = batch.labels["detection2d"][0]
    one = [(gt["boxes"][:1], gt["camera"][:1], gt["classes"][:1], torch.ones(1, dtype=torch.bool))]
    h, w = H // 4, W // 4
    task = create_task("detection2d", SETUP, stride=4)
    task.build_head(context())
    truth = clip_boxes(gt["boxes"][:1], (H, W))
    for radius, expect_truth in ((1, True), (0, False)):
        enc = encode_boxes2d(one, N_CAM, 5, (h, w), 4, (H, W), regress_radius=radius)
        out = _outputs_at_cells(enc, 1, h, w)
        heat = torch.full((1, N_CAM, 5, h, w), -10.0)
        cam, y, x = int(enc.camera[0]), int(enc.ys[0]), int(enc.xs[0])
        x_off = x + 1 if x + 1 < w else x - 1
        heat[0, cam, int(gt["classes"][0]), y, x_off] = 10.0  # the peak one cell beside the centre
        decoded = task.decode(out | {"heatmap": heat}, batch)[0]
        assert len(decoded["boxes"]) == 1
        close = bool(torch.allclose(decoded["boxes"][0], truth[0], atol=1e-3))
        assert close == expect_truth, (radius, decoded["boxes"], truth)


def test_detection2d_loss_trains_the_neighbours():
    batch = make_batch(2)
    h, w = H // 4, W // 4
    task = create_task("detection2d", SETUP, stride=4, regress_radius=1)
    task.build_head(context())
    enc = encode_boxes2d(_objects2d(batch), N_CAM, 5, (h, w), 4, (H, W), regress_radius=1)
    perfect = _outputs_at_cells(enc, len(batch), h, w) | {"heatmap": torch.logit(enc.heatmap.clamp(1e-4, 1 - 1e-4))}
    parts = task.loss(perfect, batch)
    assert float(parts["offset"]) < 1e-5 and float(parts["box"]) < 1e-5
    # Outputs right at the peaks only: the neighbours' error is counted with radius 1, not with radius 0.
    at_peaks = perfect_outputs("detection2d", batch)
    assert float(task.loss(at_peaks, batch)["offset"]) > 0.05
    assert float(create_task("detection2d", SETUP, stride=4).loss(at_peaks, batch)["offset"]) < 1e-5


def test_traffic_light_state_is_learnt_at_the_neighbours():
    batch = make_batch(2)
    at_peaks = perfect_outputs("traffic_light", batch)  # state logits right at the peaks only
    peak_only = create_task("traffic_light", SETUP).loss(at_peaks, batch)["state"]
    around = create_task("traffic_light", SETUP, regress_radius=1).loss(at_peaks, batch)["state"]
    assert float(peak_only) < 1e-3 and float(around) > 0.1


def test_objects3d_neighbour_targets_decode_to_the_centre():
    batch = make_batch(2)
    targets = batch.labels["objects3d"]
    enc = encode_objects3d(targets, GRID, GRID.shape, 5, 0.1, 2, regress_radius=1)
    row, dy, dx = enc["reg_row"], enc["reg_dy"], enc["reg_dx"]
    assert len(row) > 2 * len(enc["sample"])
    task = create_task("objects3d", SETUP, regress_radius=1)
    task.build_head(context())
    out = {"heatmap": torch.logit(enc["heatmap"].clamp(1e-4, 1 - 1e-4))}
    start = 0
    for key, n in _REG.items():
        x = torch.zeros(len(batch), n, *GRID.shape)
        target = enc["reg"][row, start:start + n].clone()
        if key == "offset":
            target -= torch.stack([dy, dx], -1).float()
        x[enc["sample"][row], :, enc["ys"][row] + dy, enc["xs"][row] + dx] = target
        out[key] = x
        start += n
    assert float(task.loss(out, batch)["regression"]) < 1e-5
    # Move one object's peak a cell along the rows: the box decoded there is still centred on the object.
    s, y, x = int(enc["sample"][0]), int(enc["ys"][0]), int(enc["xs"][0])
    y_off = y + 1 if y + 1 < GRID.shape[0] else y - 1
    heat = torch.full_like(out["heatmap"], -10.0)
    heat[s, :, y_off, x] = 10.0
    decoded = task.decode(out | {"heatmap": heat}, batch)[s]
    cx, cy = GRID.index_to_metres(enc["ys"][:1].float() + enc["reg"][:1, 0], enc["xs"][:1].float() + enc["reg"][:1, 1])
    assert len(decoded["boxes"]) == 5  # the peak on every class's map
    torch.testing.assert_close(decoded["boxes"][:, :2], torch.stack([cx, cy], -1).expand(5, 2), atol=1e-4, rtol=0)
