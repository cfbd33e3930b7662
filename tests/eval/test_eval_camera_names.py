"""Per-camera results in eval and its report use the rig's camera names, not cam0..cam7."""

import torch

from hydranet.data.sample import OBJECT_CLASSES
from hydranet.eval.loop import name_cameras
from hydranet.eval.runner import TaskEval
from hydranet.metrics import Detection2DMetric
from hydranet.setup import default_rig


def test_per_camera_ap_is_keyed_by_camera_name():
    names = default_rig().names
    te = TaskEval("detection2d", Detection2DMetric(OBJECT_CLASSES, num_cameras=8))
    name_cameras([te.metric], names)
    box = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "classes": torch.tensor([0]), "camera": torch.tensor([1])}
    te.metric.update([box | {"scores": torch.ones(1)}], [box | {"visible": torch.ones(1)}])
    out = te.metric.compute()
    assert abs(out["ap/narrow"] - 1.0) < 1e-9 and not any(k.startswith("ap/cam") for k in out)
