"""Tasks by name, for configs and the command line: ``get_task("multiplication", k=1)``; and the task a
checkpoint was trained on: ``checkpoint_task(checkpoint_tool_config(folder, config))``.

A task of your own (``docs/your_own_task.md``) is named by its import path, ``"my_tasks:ReverseTask"``, in a
training config and so in the checkpoints it writes: ``toolssm train``, ``solve`` and ``eval`` import it. In
Python, :func:`register_task` also makes it known by its short name.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

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


_BUILT_IN = frozenset(TASKS)


def register_task(task_class: type[Task]) -> type[Task]:
    """Make ``task_class`` known to :func:`get_task` by its ``name`` (usable as a class decorator)."""
    if not (inspect.isclass(task_class) and issubclass(task_class, Task)):
        raise TypeError(f"register_task takes a Task subclass, got {task_class!r}")
    if task_class.name in _BUILT_IN and TASKS[task_class.name] is not task_class:
        raise ValueError(f"{task_class.name!r} is one of hf_toolssm's tasks; give yours another name")
    TASKS[task_class.name] = task_class  # a class defined again (a notebook cell run twice) replaces its namesake
    return task_class


def _imported_task(path: str) -> type[Task]:
    """The Task subclass an import path ``module:Class`` names; a ValueError that says what is wrong."""
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"task {path!r}: cannot import {module_name} ({error}); put its folder on PYTHONPATH or "
                         "install it") from None
    task_class = getattr(module, class_name, None)
    if not (inspect.isclass(task_class) and issubclass(task_class, Task)):
        raise ValueError(f"task {path!r}: {module_name} has no Task subclass named {class_name!r}")
    return task_class


def get_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, or imported from a path ``module:Class``, built with ``options`` (e.g.
    ``k=1`` for multiplication)."""
    if name in TASKS:
        task_class = TASKS[name]
    elif ":" in name:
        task_class = _imported_task(name)
    else:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}; or a task of your own as "
                         "module:Class (docs/your_own_task.md)")
    accepted = list(inspect.signature(task_class).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
            + (f"its options are {', '.join(accepted)}" if accepted else "it takes no options")
        )
    return task_class(**options)


def checkpoint_tool_config(folder: str | Path, config) -> dict:
    """What a checkpoint was trained on: ``{"task", "task_kwargs", "train_max_size", ...}`` from its model
    config's ``tool_config`` (written by ``hf_toolssm.training``; ``config``: the loaded config or its config.json
    as a dict). Older checkpoints of transformers' own models (GPT-NeoX, Mistral) may lack it: then the training
    run's ``train_config.yaml`` in the folder or one up; ``{}`` when neither says."""
    # transformers' own config classes may lack the attribute
    tool_config = config.get("tool_config") if isinstance(config, dict) else getattr(config, "tool_config", None)
    if tool_config:
        return dict(tool_config)
    folder = Path(folder)
    for candidate in (folder / "train_config.yaml", folder.parent / "train_config.yaml"):
        if candidate.is_file():
            run = yaml.safe_load(candidate.read_text()) or {}
            return {key: run[key] for key in ("task", "task_kwargs", "train_max_size") if run.get(key) is not None}
    return {}


def checkpoint_task(tool_config: dict) -> Task:
    """The task a :func:`checkpoint_tool_config` names, built with its options; a ValueError when it names none."""
    if "task" not in tool_config:
        raise ValueError("the checkpoint names no task (no tool_config in its config.json, no train_config.yaml "
                         "beside it); `toolssm train` records it")
    return get_task(tool_config["task"], **tool_config.get("task_kwargs", {}))
