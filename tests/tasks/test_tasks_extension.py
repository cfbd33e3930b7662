"""The "add a task" example from docs/tasks.md works as written: one class, registered, trainable."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tasks_synthetic import N_CAM, SETUP, H, W, context, make_batch, run_head, subset

from hydranet.data import SEMANTIC_CLASSES
from hydranet.tasks import (
    TASKS,
    CameraHeadOptions,
    CameraTask,
    create_task,
    present_index,
    register_task,
    to_label_resolution,
)

torch.set_num_threads(1)


@pytest.fixture
def semantic_task():
    # ---- the docs/tasks.md example verbatim: the file a user drops in as hydranet/tasks/semantic.py ----
    class SemanticOptions(CameraHeadOptions):
        width: int = 32

    @register_task
    class Semantic(CameraTask):
        name = "semantic"
        label = "semantic"  # uint8 [N, H, W] class ids, see SEMANTIC_CLASSES
        Options = SemanticOptions

        def build_head(self, ctx):
            return self.camera_head(ctx, {"logits": len(SEMANTIC_CLASSES)})

        def loss(self, outputs, batch):
            logits = outputs["logits"]  # [B, N, C, h, w]
            present = present_index(batch, self.label, logits.device)
            if present.numel() == 0:
                return {"loss": self.zero_loss(outputs)}
            target = batch.labels[self.label][present.cpu()].to(logits.device).flatten(0, 1).long()
            up = to_label_resolution(logits[present], tuple(target.shape[-2:]))
            return {"loss": F.cross_entropy(up, target)}

        def decode(self, outputs, batch):
            hw = tuple(batch.images.shape[-2:])
            ids = to_label_resolution(outputs["logits"], hw).argmax(1).to(torch.uint8)
            return list(ids.reshape(len(batch), -1, *hw).cpu())

        def make_metric(self):
            from hydranet.metrics import SegmentationIoU
            return SegmentationIoU(classes=SEMANTIC_CLASSES)

        def draw(self, views, decoded, ground_truth=False):
            from hydranet.viz import draw_mask
            draw_mask(views, decoded == SEMANTIC_CLASSES.index("road"), (90, 90, 255), 0.4)
    # ---- end of the example ----
    yield Semantic
    TASKS.pop("semantic", None)


def _with_semantic(batch, n: int):
    g = torch.Generator().manual_seed(7)
    batch.labels["semantic"] = torch.randint(0, len(SEMANTIC_CLASSES), (n, N_CAM, H, W), generator=g,
                                             dtype=torch.uint8)
    batch.present["semantic"] = torch.tensor([True, False, True])
    return batch


def test_docs_example_task_trains_and_decodes(semantic_task: Any):
    task = create_task("semantic", SETUP, width=8)
    head = task.build_head(context())
    batch = _with_semantic(make_batch(3), 3)
    out = run_head(task, head, 3)
    loss = task.loss(out, batch)["loss"]
    assert torch.isfinite(loss)
    sub = {k: v[[0, 2]] for k, v in out.items()}
    torch.testing.assert_close(task.loss(sub, subset(batch, [0, 2]))["loss"], loss)
    decoded = task.decode(out, batch)
    assert decoded[0].shape == (N_CAM, H, W) and decoded[0].dtype == torch.uint8
    metric = task.make_metric()
    metric.update(decoded, task.targets(batch))
    assert 0.0 <= next(iter(metric.compute().values())) <= 1.0
    with pytest.raises(ValueError, match="semantic.*colour"):
        create_task("semantic", SETUP, colour="red")


def test_registering_a_different_class_under_a_taken_name_fails():
    class Impostor(CameraTask):
        name = "lanes"
        label = "lanes"

    with pytest.raises(ValueError, match="registered twice"):
        register_task(Impostor)
