"""Tasks: one file each, registered in ``TASKS`` (``@register_task``). The registry loads every module of this
package on first lookup, so adding a task is dropping a file here plus one config line; tasks living in other
distributions register through the ``hydranet.tasks`` entry-point group
(``[project.entry-points."hydranet.tasks"]``)."""

from hydranet.metrics.base import Metric
from hydranet.tasks.base import TASKS, HeadContext, Task, TaskOptions, create_task, register_task

__all__ = ["TASKS", "HeadContext", "Metric", "Task", "TaskOptions", "create_task", "register_task"]
