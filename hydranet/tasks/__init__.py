"""Tasks: one file each. Importing this package registers every task module in it (``@register_task``),
so adding a task is dropping a file here plus one config line; tasks living in other packages register
through the ``hydranet.tasks`` entry-point group (``[project.entry-points."hydranet.tasks"]``)."""

import importlib
import pkgutil
from importlib.metadata import entry_points

from hydranet.metrics.base import Metric
from hydranet.tasks.base import TASKS, HeadContext, Task, create_task, register_task

# Built-in task files (and any the user drops beside them), in file-name order.
for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

for _ep in entry_points(group="hydranet.tasks"):
    try:
        _ep.load()
    except Exception as e:  # a broken plug-in must name itself, not fail somewhere later
        raise ImportError(f"hydranet task plug-in '{_ep.name}' ({_ep.value}) failed to import: {e}") from e

__all__ = ["TASKS", "HeadContext", "Metric", "Task", "create_task", "register_task"]
