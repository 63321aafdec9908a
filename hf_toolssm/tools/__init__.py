"""Tools for tool-using sequence models: the token protocol, pointer memory, search memory, calculator,
the code sandbox.

See ``docs/protocol.md`` for the protocol with worked examples.
"""

from .base import (
    ANS,
    ARG_END,
    EOM,
    EOS,
    ERR,
    OBS_CLOSE,
    OBS_OPEN,
    OBSERVATION_ONLY_TOKENS,
    PAD,
    TRUNC,
    EnvironmentFactory,
    Memory,
    Role,
    StopReason,
    Tool,
    ToolEnvironment,
    error_observation,
)
from .calculator import CALC, Calculator
from .code_sandbox import CODE, CodeSandbox
from .pointer_memory import MAX_POINTERS, PointerMemory, move_left_command, move_right_command, read_command
from .registry import (
    RESERVED_COMMAND_TOKENS,
    TOOL_CLASSES,
    build_environment,
    environment_factory,
    make_tools,
    protocol_tokens,
)
from .search_memory import FIND, SearchMemory

__all__ = [
    "ANS",
    "ARG_END",
    "CALC",
    "CODE",
    "EOM",
    "EOS",
    "ERR",
    "FIND",
    "MAX_POINTERS",
    "OBSERVATION_ONLY_TOKENS",
    "OBS_CLOSE",
    "OBS_OPEN",
    "PAD",
    "RESERVED_COMMAND_TOKENS",
    "TOOL_CLASSES",
    "TRUNC",
    "Calculator",
    "CodeSandbox",
    "EnvironmentFactory",
    "Memory",
    "PointerMemory",
    "Role",
    "SearchMemory",
    "StopReason",
    "Tool",
    "ToolEnvironment",
    "build_environment",
    "environment_factory",
    "error_observation",
    "make_tools",
    "move_left_command",
    "move_right_command",
    "protocol_tokens",
    "read_command",
]
