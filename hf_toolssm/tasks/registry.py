"""Tasks by name, for configs and the command line: ``get_task("multiplication", k=1)``; and the task a
checkpoint was trained on: ``checkpoint_task(checkpoint_tool_config(folder, config))``."""

from __future__ import annotations

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
