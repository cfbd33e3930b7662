"""Real-data targets that are only partly known: sparse lidar depth, unknown velocity (NaN), BEV channels
a source does not label (bev_semantic_known). Each must contribute exactly nothing where unknown."""

import torch
from tasks_synthetic import GRID, SETUP, context, make_batch, run_head

from hydranet.data.labels import BEV_CLASSES
from hydranet.metrics import DepthMetric
from hydranet.tasks import create_task
from hydranet.tasks.heads import to_label_resolution


def test_sparse_depth_loss_and_metric_only_score_returns():
    task = create_task("depth", SETUP)
    head = task.build_head(context())
    batch = make_batch(2)
    out = run_head(task, head, 2)
    dense = batch.labels["depth"]
    sparse = torch.zeros_like(dense)
    keep = torch.rand(dense.shape, generator=torch.Generator().manual_seed(0)) < 0.03  # ~3 % of pixels: lidar-like
    sparse[keep] = dense[keep]
    batch.labels["depth"] = sparse
    loss = task.loss(out, batch)["loss"]
    # Scale-invariant log loss over the returns only (Eigen et al.), by hand.
    pred = to_label_resolution(out["log_depth"], tuple(dense.shape[-2:])).reshape(-1, *dense.shape[-2:])
    target = sparse.flatten(0, 1)
    per_image = []
    for p, t in zip(pred, target, strict=True):
        v = t > 0
        if v.any():
            g = p[v] - t[v].clamp(0.5, 250.0).log()
            per_image.append(((g**2).mean() - 0.85 * g.mean() ** 2).clamp(min=0).add(1e-6).sqrt())
    torch.testing.assert_close(loss, torch.stack(per_image).mean())
    pred = task.decode(out, batch)
    m1, m2 = DepthMetric(), DepthMetric()
    m1.update(pred, [sparse[0], sparse[1]])
    noisy = [p.clone() for p in pred]
    for p, k in zip(noisy, keep, strict=True):
        p[~k] = 123.0  # wrong everywhere a target is missing
    m2.update(noisy, [sparse[0], sparse[1]])
    assert m1.compute()["abs_rel"] == m2.compute()["abs_rel"]


def test_unknown_velocity_is_not_regressed():
    task = create_task("objects3d", SETUP)
    head = task.build_head(context())
    batch = make_batch(2)
    out = run_head(task, head, 2)
    out["velocity"].retain_grad()
    out["z"].retain_grad()
    for t in batch.labels["objects3d"]:
        t["velocity"] = torch.full_like(t["velocity"], float("nan"))
    loss = task.loss(out, batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    assert float(out["velocity"].grad.abs().sum()) == 0.0  # no velocity target: no velocity gradient
    assert float(out["z"].grad.abs().sum()) > 0  # the other regressions still learn


def test_unlabelled_bev_channels_add_no_loss_and_no_metric():
    task = create_task("bev_semantic", SETUP)
    head = task.build_head(context())
    batch = make_batch(2)
    out = run_head(task, head, 2)
    known = torch.tensor([c in ("vehicle", "pedestrian", "cone") for c in BEV_CLASSES], dtype=torch.uint8)
    batch.labels["bev_semantic_known"] = known.repeat(2, 1)
    batch.present["bev_semantic_known"] = torch.tensor([True, True])
    base = task.loss(out, batch)["loss"]
    flipped = batch.labels["bev_semantic"].clone()
    flipped[:, known == 0] = 1 - flipped[:, known == 0]  # change only the unlabelled channels
    batch.labels["bev_semantic"] = flipped
    torch.testing.assert_close(task.loss(out, batch)["loss"], base)
    targets = task.targets(batch)
    assert (targets[0][known == 0] == 255).all()
    metric = task.make_metric()
    metric.update(task.decode(out, batch), targets)
    result = metric.compute()
    assert all(result[f"iou/{c}"] != result[f"iou/{c}"] for c in ("drivable", "lane_marking", "sidewalk"))  # NaN
    assert GRID.shape == targets[0].shape[-2:]
