"""Tasks by name, for configs and the command line: ``get_task("multiplication", k=1)``."""

from __future__ import annotations

import inspect
from typing import Any

from .addition import AdditionTask
from .addition_ablations import (
    AdditionCalculatorTask,
    AdditionCoTNoToolTask,
    AdditionNoCoTTask,
    AdditionReversedNoCoTTask,
)
from .base import Task
from .coding import InteractiveCodingTask, SingleTurnCodingTask
from .hanoi import IterativeHanoiTask, RecursiveHanoiTask
from .logical_graph import LogicalGraphTask
from .mixture import MixtureTask
from .multiplication import MultiplicationTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (
        AdditionTask,
        MultiplicationTask,
        MixtureTask,
        IterativeHanoiTask,
        RecursiveHanoiTask,
        LogicalGraphTask,
        AdditionNoCoTTask,
        AdditionReversedNoCoTTask,
        AdditionCoTNoToolTask,
        AdditionCalculatorTask,
        SingleTurnCodingTask,
        InteractiveCodingTask,
    )
}


def get_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, built with ``options`` (e.g. ``k=1`` for multiplication)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    task_class = TASKS[name]
    accepted = list(inspect.signature(task_class).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
            + (f"its options are {', '.join(accepted)}" if accepted else "it takes no options")
        )
    return task_class(**options)
