"""Run exported graphs on evaluation suites (``suites/*.yaml``) with the evaluation runner itself.

``hydranet.eval.runner.run_suite`` runs any model the predictor loop runs: a ``DeployedModel`` carries its
tasks, its ``Setup`` and the manifest's recorded ``ModelConfig`` (plain data, no weights), so fp32 and INT8
graphs are scored on the same suite frames with the same metrics as checkpoints are by ``hydranet eval``.
"""

from __future__ import annotations

from hydranet.deploy.runtime import DeployedModel
from hydranet.eval import load_suites, run_suite


def suite_metrics(deployed: dict[str, DeployedModel], suite_path: str, frames: int | None = None,
                  on_batch=None) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{suite name: {label: {task: metrics}}}`` for every suite in ``suite_path`` (file or directory)."""
    result = {}
    for suite in load_suites(suite_path):
        runs = run_suite(dict(deployed), suite, batch_size=max(dm.batch_size for dm in deployed.values()),
                         frames=frames, on_batch=on_batch)
        result[suite.name] = {label: {t: te.metrics for t, te in run.tasks.items()} for label, run in runs.items()}
    return result
