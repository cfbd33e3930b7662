"""The Sample/Batch contract: validation errors name the field, collate keeps presence masks."""

import pytest
import torch

from hydranet.data.sample import Sample, collate
from hydranet.setup import default_rig


def make_sample(index: int, labels: dict) -> Sample:
    rig = default_rig((8, 16))
    n = len(rig)
    return Sample(
        images=torch.full((n, 3, 8, 16), index, dtype=torch.uint8),
        intrinsics=rig.intrinsics(),
        T_ego_from_cam=rig.extrinsics(),
        T_world_from_ego=torch.eye(4),
        timestamp=0.1 * index,
        scene_id=f"scene{index}",
        camera_names=rig.names,
        frame_index=index,
        labels=labels,
    )


def test_collate_keeps_presence_and_zero_fills_absent_dense_labels():
    depth = torch.rand(8, 8, 16) * 50
    boxes = {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "classes": torch.tensor([0]),
             "camera": torch.tensor([2]), "visible": torch.tensor([1.0]), "track_id": torch.tensor([7])}
    batch = collate([make_sample(0, {"depth": depth}), make_sample(1, {"detection2d": boxes})])
    assert batch.present["depth"].tolist() == [True, False]
    assert batch.present["detection2d"].tolist() == [False, True]
    assert torch.equal(batch.labels["depth"][0], depth)
    assert batch.labels["depth"][1].abs().sum() == 0
    assert batch.labels["detection2d"][0] is None
    assert torch.equal(batch.labels["detection2d"][1]["boxes"], boxes["boxes"])
    assert batch.images.shape == (2, 8, 3, 8, 16)
    assert batch.frame_index.tolist() == [0, 1]


def test_collate_rejects_mismatched_rigs_naming_the_sample():
    a, b = make_sample(0, {}), make_sample(1, {})
    b.images = torch.zeros(8, 3, 4, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="scene1#1"):
        collate([a, b])


def test_validate_names_the_bad_field():
    s = make_sample(0, {"depth": torch.zeros(8, 4, 4)})
    with pytest.raises(ValueError, match="label 'depth'"):
        s.validate("shard-000.tar:key42")
    s = make_sample(0, {"nonsense": 1})
    with pytest.raises(ValueError, match="unknown label 'nonsense'"):
        s.validate()
    s = make_sample(0, {})
    s.intrinsics = torch.eye(3)
    with pytest.raises(ValueError, match="intrinsics"):
        s.validate()


@pytest.mark.parametrize("change, message", [
    (lambda s: setattr(s, "intrinsics", s.intrinsics.double()), r"intrinsics must be float32"),
    (lambda s: setattr(s, "T_world_from_ego", torch.eye(4, dtype=torch.float64)), r"T_world_from_ego must be float32"),
    (lambda s: setattr(s, "timestamp", 1_700_000_000.05), r"timestamp 1700000000.05 s looks absolute"),
    (lambda s: s.T_world_from_ego.__setitem__((0, 3), 512_000.0), r"512000 m from the world origin"),
    (lambda s: s.labels.__setitem__("drivable", torch.zeros(8, 8, 16, dtype=torch.int64)),
     r"label 'drivable' must be uint8 \[N, H, W\], got torch.int64"),
    (lambda s: s.labels.__setitem__("bev_semantic", torch.zeros(2, 3, dtype=torch.uint8)),
     r"label 'bev_semantic' must be \[C, R, C'\] with C = 6, got \(2, 3\)"),
    (lambda s: s.labels.__setitem__("bev_semantic", torch.zeros(6, 4, 4)),
     r"must be uint8 \[C, R, C'\], got torch.float32"),
    (lambda s: s.labels.__setitem__("ego_path", torch.zeros(5)), r"label 'ego_path' must be \[T, 3\], got \(5,\)"),
    (lambda s: s.labels.__setitem__("detection2d", {"boxes": torch.zeros(2, 4),
                                                    "classes": torch.zeros(3, dtype=torch.int64),
                                                    "camera": torch.zeros(2, dtype=torch.int64)}),
     r"label 'detection2d' fields describe different numbers of objects"),
    (lambda s: s.labels.__setitem__("objects3d", {"boxes": torch.ones(1, 7), "classes": torch.zeros(1)}),
     r"label 'objects3d.classes' must be an integer tensor"),
])
def test_validate_refuses_wrong_dtypes_shapes_and_float32_ranges(change, message):
    s = make_sample(0, {})
    s.validate()  # the reference sample is valid
    change(s)
    with pytest.raises(ValueError, match=message):
        s.validate()
