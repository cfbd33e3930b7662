"""Fixtures for the data tests: Samples with every label format of hydranet/data/sample.py."""

from __future__ import annotations

import math

import torch

from hydranet.data.sample import ALL_LABELS, RAGGED_LABELS, Sample
from hydranet.setup import default_rig


def make_sample(index: int, height: int = 16, width: int = 32, drop: tuple[str, ...] = (), cams: int = 8) -> Sample:
    """A random sample (seeded by ``index``) carrying every label except those in ``drop``."""
    g = torch.Generator().manual_seed(1000 + index)
    rig = default_rig((height, width))
    names = rig.names[:cams]
    n, h, w = len(names), height, width

    def rnd(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    def ints(hi: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, hi, shape, generator=g)

    m, lights, lines = index % 4, (index + 1) % 3, 2  # vary sizes, include empty ragged labels

    def boxes2d(k: int) -> torch.Tensor:  # x1 <= x2, y1 <= y2: an inverted box is refused (Sample.validate)
        b = rnd(k, 4) * w
        return torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], 1)

    def boxes3d(k: int) -> torch.Tensor:  # positive l, w, h
        b = rnd(k, 7) * 20 - 10
        b[:, 3:6] = b[:, 3:6].abs() + 0.1
        return b

    labels = {
        "drivable": ints(2, n, h, w).to(torch.uint8),
        "lanes": ints(4, n, h, w).to(torch.uint8),
        "semantic": ints(12, n, h, w).to(torch.uint8),
        "instance": ints(40, n, h, w).to(torch.int32),
        # Depth with sky (0), odd floats (full mantissa) and a denormal: bit-exactness is tested, not closeness.
        "depth": torch.where(rnd(n, h, w) < 0.2, torch.zeros(()), rnd(n, h, w) * 80.0 + math.pi),
        "bev_semantic": ints(2, 6, 8, 12).to(torch.uint8),
        "ego_path": rnd(30, 3) * 10,
        "detection2d": {"boxes": boxes2d(m), "classes": ints(5, m), "camera": ints(n, m),
                        "visible": rnd(m), "track_id": ints(100, m)},
        "traffic_light": {"boxes": boxes2d(lights), "camera": ints(n, lights), "state": ints(3, lights),
                          "lane": ints(3, lights) - 1, "track_id": ints(100, lights)},
        "objects3d": {"boxes": boxes3d(m), "velocity": rnd(m, 2), "classes": ints(5, m),
                      "track_id": ints(100, m)},
        "lane_lines": {"points": rnd(lines, 20, 3) * 30, "kind": ints(3, lines) + 1},
    }
    labels["depth"][0, 0, 0] = 1e-40  # denormal float32
    assert set(labels) == ALL_LABELS
    T_world = torch.eye(4)
    T_world[:3, 3] = rnd(3) * 100
    return Sample(
        images=ints(256, n, 3, h, w).to(torch.uint8),
        # non-round fx, fy, cx, cy (the float storage is checked exactly); a pinhole K keeps its zero skew
        intrinsics=rig.intrinsics()[:cams] + rnd(n, 3, 3) * 1e-3 * torch.tensor([[1.0, 0, 1], [0, 1, 1], [0, 0, 0]]),
        T_ego_from_cam=rig.extrinsics()[:cams],
        T_world_from_ego=T_world,
        timestamp=index * 0.1 + 1 / 3,
        scene_id=f"scene{index // 4:03d}",
        camera_names=names,
        frame_index=index % 4,
        labels={k: v for k, v in labels.items() if k not in drop},
    )


def assert_same_sample(a: Sample, b: Sample) -> None:
    """Every tensor equal bit for bit (dtype and shape included), every scalar equal, same label set."""
    for name in ("images", "intrinsics", "T_ego_from_cam", "T_world_from_ego"):
        _same(getattr(a, name), getattr(b, name), name)
    assert (a.timestamp, a.scene_id, a.camera_names, a.frame_index) == (b.timestamp, b.scene_id, b.camera_names,
                                                                        b.frame_index)
    assert sorted(a.labels) == sorted(b.labels)
    for key, va in a.labels.items():
        vb = b.labels[key]
        if key in RAGGED_LABELS:
            assert sorted(va) == sorted(vb), key
            for field in va:
                _same(va[field], vb[field], f"{key}.{field}")
        else:
            _same(va, vb, key)


def _same(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    assert x.dtype == y.dtype, f"{what}: {x.dtype} != {y.dtype}"
    assert x.shape == y.shape, f"{what}: {tuple(x.shape)} != {tuple(y.shape)}"
    # Compare bytes, not values: catches -0.0 vs 0.0 and NaN payloads that == would miss.
    if x.numel() == 0:
        return
    assert x.contiguous().view(torch.uint8).equal(y.contiguous().view(torch.uint8)), f"{what}: bytes differ"
