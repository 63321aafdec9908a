"""Synthetic tasks with reference tool-use traces: addition, multiplication, Tower of Hanoi, Logical Graph,
coding.

``get_task(name, **options)`` builds one; ``docs/tasks.md`` shows every task's format with a worked
example. Each instance carries its role-tagged trace, and :func:`replay` checks it against the tools.
"""

from .base import Instance, ReplayMismatch, ReplayResult, Segment, Task, Trace, replay
from .registry import TASKS, checkpoint_task, checkpoint_tool_config, get_task, register_task

__all__ = [
    "TASKS",
    "Instance",
    "ReplayMismatch",
    "ReplayResult",
    "Segment",
    "Task",
    "Trace",
    "checkpoint_task",
    "checkpoint_tool_config",
    "get_task",
    "register_task",
    "replay",
]
