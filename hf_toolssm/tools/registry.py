"""Tools by name, so configs can say ``{"pointer": {"num_pointers": 2}}``, and the full protocol vocabulary.

Tool instances hold the state of one sequence (pointer positions, a search index), so every sequence
needs its own: :func:`environment_factory` returns a callable that builds fresh tools every time, which
is what generation should call once per batch row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from .base import EnvironmentFactory, Tool, ToolEnvironment
from .calculator import Calculator
from .code_sandbox import CodeSandbox
from .pointer_memory import MAX_POINTERS, PointerMemory
from .search_memory import SearchMemory

TOOL_CLASSES: dict[str, type[Tool]] = {
    PointerMemory.name: PointerMemory,  # "pointer"
    SearchMemory.name: SearchMemory,  # "search"
    Calculator.name: Calculator,  # "calculator"
    CodeSandbox.name: CodeSandbox,  # "code"
}

#: Command tokens reserved in the vocabulary before their tool existed, so adding it did not change the
#: tokenizer: ``[code]`` is now :class:`CodeSandbox`'s and keeps its id (it stays listed here, last).
RESERVED_COMMAND_TOKENS = ("[code]",)

ToolSpec = Mapping[str, Mapping[str, Any] | None] | Iterable[str]


def make_tools(spec: ToolSpec) -> list[Tool]:
    """Fresh tool instances from ``{name: constructor kwargs or None}`` or a list of names, in order.

    >>> make_tools({"pointer": {"num_pointers": 2}, "search": None})
    [PointerMemory(num_pointers=2, positions=[0, 0]), SearchMemory(max_lines=32)]
    """
    items = spec.items() if isinstance(spec, Mapping) else ((name, None) for name in spec)
    tools = []
    for name, kwargs in items:
        if name not in TOOL_CLASSES:
            raise ValueError(f"unknown tool {name!r}; known tools: {sorted(TOOL_CLASSES)}")
        tools.append(TOOL_CLASSES[name](**(kwargs or {})))
    return tools


def build_environment(tools: ToolSpec, **limits: int) -> ToolEnvironment:
    """One environment with fresh tools; ``limits`` are ToolEnvironment's ``max_*`` fields."""
    return ToolEnvironment(tools=make_tools(tools), **limits)


def environment_factory(tools: ToolSpec, **limits: int) -> EnvironmentFactory:
    """A callable that builds a new environment, with new tools, on every call (one per sequence)."""
    # A copy the factory reads on every call: a one-shot iterable of names (a generator) would otherwise be
    # used up by the check below, and every environment after it would have no tools.
    tools = dict(tools) if isinstance(tools, Mapping) else list(tools)
    build_environment(tools, **limits)  # fail now on a bad spec, not in the middle of a decode
    return partial(build_environment, tools, **limits)


def protocol_tokens() -> list[str]:
    """Every non-character token of the protocol, in a fixed order: the fixed tokens, every tool at its
    largest (8 pointers), then the reserved commands. One vocabulary serves every task."""
    every_tool = ToolEnvironment(tools=[PointerMemory(MAX_POINTERS), SearchMemory(), Calculator()])
    return list(dict.fromkeys([*every_tool.special_tokens(), *RESERVED_COMMAND_TOKENS]))
