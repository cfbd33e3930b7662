"""Run exported graphs on evaluation suites (``suites/*.yaml``) with the evaluation runner itself.

``hydranet.eval.runner.run_suite`` drives anything that offers ``task_objects``, ``forward_batch``,
``eval()`` and a ``cfg`` with the image size, BEV grid and camera count; ``GraphModel`` gives a
``DeployedModel`` exactly that (``cfg`` is the manifest's recorded ``ModelConfig`` — plain data, no
weights). So fp32 and INT8 graphs are scored on the same suite frames with the same metrics as
checkpoints are by ``hydranet eval``.
"""

from __future__ import annotations

from torch import Tensor

from hydranet.data.sample import Batch
from hydranet.deploy.runtime import DeployedModel
from hydranet.eval.runner import run_suite
from hydranet.eval.suite import load_suites
from hydranet.model import ModelConfig


class GraphModel:
    """A ``DeployedModel`` behind the model interface ``run_suite`` uses."""

    def __init__(self, deployed: DeployedModel):
        self.deployed = deployed
        self.task_objects = deployed.tasks
        self.cfg = ModelConfig.model_validate(deployed.manifest.architecture)

    def eval(self) -> GraphModel:
        """No-op (a graph has no train mode); returns self, as ``nn.Module.eval`` does."""
        return self

    def forward_batch(self, batch: Batch, tasks: list[str] | None = None,
                      camera_valid: Tensor | None = None) -> dict[str, dict[str, Tensor]]:
        """The graph's outputs for ``tasks`` (``DeployedModel.forward_batch``)."""
        return self.deployed.forward_batch(batch, tasks, camera_valid)


def suite_metrics(deployed: dict[str, DeployedModel], suite_path: str, frames: int | None = None,
                  on_batch=None) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{suite name: {label: {task: metrics}}}`` for every suite in ``suite_path`` (file or directory)."""
    models = {label: GraphModel(dm) for label, dm in deployed.items()}
    result = {}
    for suite in load_suites(suite_path):
        runs = run_suite(models, suite, batch_size=max(dm.batch_size for dm in deployed.values()), frames=frames,
                         on_batch=on_batch)
        result[suite.name] = {label: {t: te.metrics for t, te in run.tasks.items()} for label, run in runs.items()}
    return result
