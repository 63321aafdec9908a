"""The agent's model of a pointer-memory read head, and the walks every pointer trace is built from.

A :class:`Pointer` writes the tool's command tokens into a :class:`~hf_toolssm.tasks.trace.TraceWriter`
and predicts the observation from the writer's memory, with the semantics of
:class:`~hf_toolssm.tools.pointer_memory.PointerMemory`: a read sees the token under the pointer (or
``[EOM]`` past the end), a move left at position 0 is refused with ``[ERR]``, a move right may go one
past the last memory token and no further.

Two habits keep every decision in a trace local (``docs/tasks.md``):

* a pointer that waits for the model's next thought *follows the writing*: it moves right once after
  every token written, so it always stands on the last one (:meth:`PointerTrace.write_followed`);
* a pointer that scans data moves first and reads second, and a read that is not what it wanted makes
  it step back, so an exhausted pointer keeps reporting "exhausted" however often it is asked
  (the operand cursors of :mod:`~hf_toolssm.tasks.arithmetic`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from ..tools.base import EOM, ERR
from ..tools.pointer_memory import MAX_POINTERS, move_left_command, move_right_command, read_command
from .trace import TraceWriter


class Pointer:
    """Read head ``index`` (1-based) of a :class:`PointerTrace`."""

    def __init__(self, trace: PointerTrace, index: int):
        self.trace = trace
        self.index = index
        self.position = 0
        self._read, self._left, self._right = (
            read_command(index),
            move_left_command(index),
            move_right_command(index),
        )

    def read(self) -> str:
        """``[pointerK.read()]``: returns (and records) the observed token."""
        memory = self.trace.memory
        token = memory[self.position] if self.position < len(memory) else EOM
        self.trace.command(self._read)
        self.trace.observe(token)
        return token

    def move_left(self) -> bool:
        """``[pointerK.move_left()]``; False (and an ``[ERR]`` observation) at position 0."""
        self.trace.command(self._left)
        if self.position == 0:
            self.trace.observe(ERR)
            return False
        self.position -= 1
        return True

    def move_right(self) -> None:
        """``[pointerK.move_right()]``; the traces never push a pointer beyond one past the end."""
        self.trace.command(self._right)
        if self.position >= len(self.trace.memory):
            raise AssertionError(f"pointer{self.index} would move beyond the end of memory")
        self.position += 1

    def walk_right_until(self, stop: Container[str], followers: Iterable[Pointer] = ()) -> str:
        """Move right (with ``followers`` in step), then read, until the read is in ``stop``; return it."""
        followers = tuple(followers)
        while True:
            self.move_right()
            for follower in followers:
                follower.move_right()
            token = self.read()
            if token in stop:
                return token

    def walk_left_until(self, stop: Container[str]) -> str:
        """Move left, then read, until the read is in ``stop``; return it."""
        while True:
            if not self.move_left():
                raise AssertionError(f"pointer{self.index} walked off the start of memory looking for {stop}")
            token = self.read()
            if token in stop:
                return token


class PointerTrace(TraceWriter):
    """A trace writer with ``num_pointers`` read heads, all starting at memory position 0."""

    def __init__(self, prompt: Sequence[str], num_pointers: int):
        if not 1 <= num_pointers <= MAX_POINTERS:
            raise ValueError(
                f"the pointer tool has at most {MAX_POINTERS} pointers, asked for {num_pointers}"
            )
        super().__init__(prompt)
        self.pointers = [Pointer(self, index) for index in range(1, num_pointers + 1)]

    def write_followed(self, tokens: Iterable[str], followers: Sequence[Pointer]) -> None:
        """Write each token, moving every follower right after it, so followers stay on the last token."""
        for token in tokens:
            self.write(token)
            for follower in followers:
                follower.move_right()
