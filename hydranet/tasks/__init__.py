"""Tasks: one file each; importing this package registers the built-in ones."""

from hydranet.tasks.base import TASKS, HeadContext, Metric, Task, create_task, register_task

__all__ = ["TASKS", "HeadContext", "Metric", "Task", "create_task", "register_task"]
