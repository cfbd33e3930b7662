"""DDP: two gloo processes, each seeing half the frames, compute what one process computes."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hydranet.metrics import (
    DepthMetric,
    Detection2DMetric,
    Detection3DMetric,
    LaneF1,
    SegmentationIoU,
    TrafficLightMetric,
)
from hydranet.train import distributed


def make_data(n=6):
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    data = []
    for _ in range(n):
        boxes = torch.tensor(rng.uniform(0, 50, (4, 2)))
        boxes = torch.cat([boxes, boxes + 10], 1).float()
        det_t = {"boxes": boxes, "classes": torch.tensor(rng.integers(0, 2, 4)), "camera": torch.tensor([0, 1, 0, 1])}
        det_p = {**det_t, "boxes": boxes + torch.tensor(rng.normal(0, 1, (4, 4))).float(),
                 "scores": torch.tensor(rng.random(4))}
        b3 = torch.tensor(np.c_[rng.uniform(-20, 20, (3, 2)), np.zeros(3), np.ones((3, 3)), np.zeros(3)])
        o_t = {"boxes": b3, "classes": torch.tensor([0, 1, 0]), "velocity": torch.zeros(3, 2)}
        o_p = {**o_t, "boxes": b3 + torch.tensor(rng.normal(0, 0.7, (3, 7))), "scores": torch.tensor(rng.random(3))}
        tl_t = {"boxes": boxes[:2], "camera": torch.tensor([0, 1]), "state": torch.tensor(rng.integers(0, 3, 2))}
        tl_p = {**tl_t, "state": torch.tensor(rng.integers(0, 3, 2)), "scores": torch.ones(2)}
        seg_t = (torch.rand(2, 8, 8, generator=g) > 0.5).to(torch.uint8)
        lane_t = torch.randint(0, 4, (2, 8, 8), generator=g).to(torch.uint8)
        depth_t = torch.rand(2, 8, 8, generator=g) * 90
        data.append({
            "det2d": (det_p, det_t), "det3d": (o_p, o_t), "tl": (tl_p, tl_t),
            "seg": (torch.rand(2, 8, 8, generator=g), seg_t),
            "lanes": (torch.randint(0, 4, (2, 8, 8), generator=g), lane_t),
            "depth": (depth_t * (0.8 + 0.4 * torch.rand(2, 8, 8, generator=g)), depth_t),
        })
    return data


def make_metrics():
    return {"det2d": Detection2DMetric(["a", "b"], 2), "det3d": Detection3DMetric(["a", "b"]),
            "tl": TrafficLightMetric(), "seg": SegmentationIoU(["drivable"], multilabel=True),
            "lanes": LaneF1(tolerance_px=1), "depth": DepthMetric()}


def compute_all(frames):
    metrics = make_metrics()
    for name, m in metrics.items():
        m.update([f[name][0] for f in frames], [f[name][1] for f in frames])
    return metrics


def worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        data = make_data()
        metrics = compute_all(data[rank::2])  # interleaved shards, as DistributedSampler gives
        results = {}
        for name, m in metrics.items():
            m.sync()
            m.sync()  # idempotent
            results[name] = m.compute()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown(clean=False)
    distributed.exit_process(0)  # gloo can SIGABRT at interpreter teardown; exit_process says why


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_sync_equals_single_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    data = make_data()
    # ranks gather in rank order; frame order only matters for exact score ties, absent here
    single = {name: m.compute() for name, m in compute_all(data).items()}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, ref in single.items():
            assert got[name] == pytest.approx(ref, nan_ok=True), (rank, name)
    local = {name: m.compute() for name, m in compute_all(data[0::2]).items()}
    assert local["det2d"] != pytest.approx(single["det2d"], nan_ok=True)  # the sync did something


def test_update_after_sync_is_an_error():
    m = DepthMetric()
    m._synced = True  # as after a real sync
    with pytest.raises(RuntimeError, match="reset"):
        m.update([torch.ones(1, 2, 2)], [torch.ones(1, 2, 2)])
