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
