"""The coding task's third trajectory source, distillation: mini-SWE-agent trajectories as role-tagged segments.

The paper (§3.6, App. E) ran SWE-agent-LM-32B (from SWE-smith) inside mini-SWE-agent on the same
codebases, told it to pass ``v10`` from ``main`` to ``foo`` editing at most 3 files between runs, and kept
the trajectories that fixed the code and were shorter than the average for their size. That needs a 32B
model this project does not download (and a GPU to serve it), so this module is only the hook: once such
trajectories exist (``.traj.json`` files), :func:`segments_from_mini_swe_agent` turns each into the
segments our data pipeline trains on, and the paper's filter is the caller's ``correct and short`` test.

The mapping, for every step of the conversation after the prompt:

* the assistant's text around its bash block -> a **thought** (ending with ``"\\n"``);
* the bash command -> a **command**: ``[code]`` + the command's characters + ``[/cmd]``;
* the environment's reply (the next ``user`` or ``tool`` message, verbatim, e.g.
  ``<returncode>0</returncode>\\n<output>...</output>``) -> an **observation** ``[OBS] ... [/OBS]``;
* the final submission (a command that echoes ``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``, or v1's
  ``MINI_SWE_AGENT_FINAL_OUTPUT``) -> **output**: ``[ANS]``, ``answer``, ``[EOS]``.

Steps the harness rejected (no single bash block; its reply is a format error) are dropped with their
reply. Text is made tokenizer-safe (tabs expanded, other characters outside ``"\\n"`` and printable ASCII
shown as ``?``). Both of mini-SWE-agent's formats are read: text (a fenced ``bash`` block, v1, or
``mswea_bash_command``, v2) and tool calls (v2: ``tool_calls`` with a ``command`` argument, replies with
role ``tool``).

**These traces do not replay** through :class:`~hf_toolssm.tools.code_sandbox.CodeSandbox`: their
commands are bash (``sed -i``, ``python main.py``, ``grep -rn``), which the sandbox's six commands do not
cover, and their observations are the teacher environment's. They are training text, with the prompt and
observations masked like any other trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tools.base import ANS, ARG_END, EOS, OBS_CLOSE, OBS_OPEN, Role
from ..tools.code_sandbox import CODE, printable
from .base import Segment

SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")
_BASH_BLOCK = re.compile(r"```(?:bash|mswea_bash_command)[ \t]*\n(.*?)\n?```", re.DOTALL)


def _text(value: Any) -> str:
    """A message's content as text (OpenAI content may be a list of parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part.get("text", "") if isinstance(part, Mapping) else str(part) for part in value)
    return "" if value is None else str(value)


def _clean(text: str) -> list[str]:
    return list(printable(text.expandtabs(4)))


def _action(message: Mapping[str, Any]) -> tuple[str, str] | None:
    """(thought, command) of an assistant message, or ``None`` if it has no single command."""
    calls = message.get("tool_calls") or []
    content = _text(message.get("content")).strip()
    if calls:
        if len(calls) != 1:
            return None
        arguments = calls[0].get("function", {}).get("arguments", "{}")
        try:
            command = (json.loads(arguments) if isinstance(arguments, str) else arguments).get("command")
        except (ValueError, AttributeError):
            return None
        return (content, command) if isinstance(command, str) else None
    blocks = _BASH_BLOCK.findall(content)
    if len(blocks) != 1:
        return None
    return _BASH_BLOCK.sub("", content).strip(), blocks[0].strip()


def segments_from_mini_swe_agent(
    trajectory: Mapping[str, Any] | str | Path, *, prompt: str | None = None, answer: str = ""
) -> list[Segment]:
    """The trajectory (a ``.traj.json`` path or its parsed dict) as role-tagged segments, prompt first.

    ``prompt`` replaces the trajectory's task message (e.g. our own ``repo SIZE-SEED`` prompt); by default
    the first ``user`` message is the prompt (mini-SWE-agent's system message, the harness's
    instructions, is left out). ``answer`` is what follows ``[ANS]`` at the submission.
    """
    if not isinstance(trajectory, Mapping):
        trajectory = json.loads(Path(trajectory).read_text())
    messages = list(trajectory.get("messages", []))
    first_user = next((i for i, message in enumerate(messages) if message.get("role") == "user"), None)
    if first_user is None:
        raise ValueError("not a mini-SWE-agent trajectory: no user message")
    segments = [
        Segment(Role.PROMPT, _clean(prompt if prompt is not None else _text(messages[first_user]["content"])))
    ]
    index = first_user + 1
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.get("role") != "assistant":
            continue  # a reply to nothing we kept (a format error after a dropped step)
        action = _action(message)
        reply = (
            messages[index]
            if index < len(messages) and messages[index].get("role") in ("user", "tool")
            else None
        )
        if action is None:
            index += reply is not None  # drop the step and the harness's format error
            continue
        thought, command = action
        if thought:
            segments.append(Segment(Role.THOUGHT, _clean(thought + "\n")))
        if any(marker in command for marker in SUBMIT_MARKERS):
            segments.append(Segment(Role.OUTPUT, [ANS, *_clean(answer), EOS]))
            return segments
        segments.append(Segment(Role.COMMAND, [CODE, *_clean(command), ARG_END]))
        observation = _text(reply["content"]) if reply is not None else ""
        segments.append(Segment(Role.OBSERVATION, [OBS_OPEN, *_clean(observation), OBS_CLOSE]))
        index += reply is not None
    raise ValueError("the trajectory never submits: not a finished run")
