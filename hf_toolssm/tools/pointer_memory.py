"""Pointer memory: read heads that walk over the memory tape one token at a time (paper §2.2, App. D.1).

The model never writes to this memory directly: everything it generates as a thought or an output is
appended to the tape by :class:`~hf_toolssm.tools.base.ToolEnvironment`, so a pointer that walks past the
prompt reads the model's own earlier thoughts (a write-once tape).

Commands, one token each, for pointer ``k`` in ``1..num_pointers`` (the paper's spelling)::

    [pointer{k}.read()]        inject the token under the pointer, or [EOM] past the end of memory
    [pointer{k}.move_left()]   one position left; at position 0 the pointer stays and [ERR] is injected
    [pointer{k}.move_right()]  one position right, up to len(memory) (one past the last token, where
                               the next generated token will land); beyond that it stays and [ERR] is
                               injected

Every pointer starts at position 0, the first token of the prompt, when a sequence starts. There is no
"initialize pointer" command: the paper's "new pointer starts at the first token of the input" is the
state every pointer is in at the start, and walking from there is all our traces need.

A read always injects exactly one token and a successful move injects nothing, so the model always
knows how many observation tokens follow a command: the cheapest possible encoding, as in the paper.
"""

from __future__ import annotations

from .base import EOM, ERR, Memory, Tool

#: The paper's experiments use at most max(k, 2) pointers for k-digit multipliers; 8 is plenty and keeps
#: the fixed vocabulary small (3 command tokens per pointer).
MAX_POINTERS = 8


def read_command(pointer: int) -> str:
    """The token that reads pointer ``pointer`` (1-based), e.g. ``"[pointer1.read()]"``."""
    return f"[pointer{pointer}.read()]"


def move_left_command(pointer: int) -> str:
    return f"[pointer{pointer}.move_left()]"


def move_right_command(pointer: int) -> str:
    return f"[pointer{pointer}.move_right()]"


class PointerMemory(Tool):
    """``num_pointers`` independent pointers over the environment's memory.

    The instance holds the pointer positions of one sequence; :meth:`reset` puts them all back at 0.
    """

    name = "pointer"

    def __init__(self, num_pointers: int = 3):
        is_int = isinstance(num_pointers, int) and not isinstance(num_pointers, bool)
        if not is_int or not 1 <= num_pointers <= MAX_POINTERS:
            raise ValueError(f"num_pointers must be an int in 1..{MAX_POINTERS}, got {num_pointers!r}")
        self.num_pointers = num_pointers
        self.positions: list[int] = [0] * num_pointers  # 0-based; positions[0] belongs to pointer1
        # command token -> (0-based pointer index, action), so run() is one dict lookup
        self._actions: dict[str, tuple[int, str]] = {}
        for index in range(num_pointers):
            pointer = index + 1
            self._actions[read_command(pointer)] = (index, "read")
            self._actions[move_left_command(pointer)] = (index, "move_left")
            self._actions[move_right_command(pointer)] = (index, "move_right")

    def command_tokens(self) -> list[str]:
        return list(self._actions)  # pointer1 read/left/right, then pointer2, ...: a stable order

    def reset(self) -> None:
        self.positions = [0] * self.num_pointers

    def run(self, command: str, argument: list[str], memory: Memory) -> list[str]:
        if command not in self._actions:
            return [ERR]
        index, action = self._actions[command]
        position = self.positions[index]
        if action == "read":
            return [memory[position]] if position < len(memory) else [EOM]
        if action == "move_left":
            if position == 0:
                return [ERR]
            self.positions[index] = position - 1
            return []
        # move_right: one past the end is allowed because memory grows as the model generates
        if position >= len(memory):
            return [ERR]
        self.positions[index] = position + 1
        return []

    def __repr__(self) -> str:
        return f"PointerMemory(num_pointers={self.num_pointers}, positions={self.positions})"
