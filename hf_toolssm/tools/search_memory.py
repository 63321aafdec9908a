"""Search memory: grep over the memory's lines (paper §2.3, the Logical Graph task).

One command, with an argument::

    [find] x_1 ... x_m [/cmd]

The observation is every memory line that contains ``x_1 ... x_m`` as a contiguous token subsequence,
in memory order, joined by ``"\\n"`` tokens and wrapped in ``[OBS] ... [/OBS]``::

    [OBS] line_a \\n line_b [/OBS]          two matching lines
    [OBS] [/OBS]                           no line matches
    [OBS] l_1 \\n ... \\n l_32 [TRUNC] [/OBS]  more than ``max_lines`` lines match: the first ``max_lines``
    [OBS] [ERR] empty argument [/OBS]      an empty argument (``[find][/cmd]``)

A line never contains ``"\\n"``, so an argument containing one matches nothing.

**The unfinished last line is searchable.** Memory is split exactly as ``grep`` splits a file: the text
after the last ``"\\n"`` is a line too, even while the model is still writing it. This is the paper's
semantics (grep over the whole memory text) and it keeps the tool free of hidden state: an observation
depends only on the memory and the argument. A trace that does not want its own half-written line to
match can end the line (emit ``"\\n"``) before it issues ``[find]``.

Speed: a Logical Graph trace at 1,000 nodes issues thousands of searches over tens of thousands of
memory tokens, so a token-by-token scan in Python is far too slow. Memory is append-only, so the tool
keeps an incremental copy of it as a ``str`` with one character per token (characters stand for
themselves, longer tokens such as ``[ANS]`` get a private-use code point) and lets ``str.find`` do the
scanning in C. ``tests/test_tools.py`` checks it against a plain token-list grep.
"""

from __future__ import annotations

import threading
from bisect import bisect_right

from .base import OBS_CLOSE, OBS_OPEN, TRUNC, Memory, Tool, error_observation

FIND = "[find]"

# Code points for tokens that are not a single character: the supplementary private-use planes 15 and
# 16, which no tokenizer text of ours contains. A single-character token in that range is coded through
# the table as well, so two different tokens never share a code point.
_FIRST_PRIVATE_CODE = 0xF0000
_LAST_PRIVATE_CODE = 0x10FFFD


class _TokenCoder:
    """Maps each token to one character so a token sequence becomes a ``str``. Shared by all instances:
    the mapping only grows, and it is the same for every sequence."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}
        self._lock = threading.Lock()  # two threads must never hand out the same code point

    def encode(self, token: str) -> str | None:
        """The token's character, or ``None`` once the private-use planes are exhausted (131k tokens)."""
        if len(token) == 1 and ord(token) < _FIRST_PRIVATE_CODE:
            return token
        code = self._codes.get(token)
        if code is None:
            with self._lock:
                code = self._codes.get(token)
                if code is None:
                    next_code = _FIRST_PRIVATE_CODE + len(self._codes)
                    if next_code > _LAST_PRIVATE_CODE:
                        return None
                    code = self._codes[token] = chr(next_code)
        return code


_CODER = _TokenCoder()


class _MemoryText:
    """An incrementally maintained one-character-per-token copy of one :class:`Memory`.

    ``text[i]`` codes ``memory[i]``; ``line_starts`` holds the memory index where each line begins.
    """

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.text = ""
        self.line_starts = [0]

    def catch_up(self) -> bool:
        """Code the tokens appended since the last call; ``False`` if a token could not be coded."""
        start = len(self.text)
        new_tokens = self.memory.tokens[start:]
        if not new_tokens:
            return True
        codes = [_CODER.encode(token) for token in new_tokens]
        if None in codes:
            return False
        self.text += "".join(codes)
        self.line_starts += [start + offset + 1 for offset, token in enumerate(new_tokens) if token == "\n"]
        return True


class SearchMemory(Tool):
    """The ``[find]`` command: grep the memory's lines for a token sequence.

    ``max_lines`` bounds the observation: beyond it the observation ends with ``[TRUNC]``. (The
    environment's ``max_observation_tokens`` bounds its size in tokens on top of that.)
    """

    name = "search"

    def __init__(self, max_lines: int = 32):
        if not isinstance(max_lines, int) or max_lines < 1:
            raise ValueError(f"max_lines must be a positive int, got {max_lines!r}")
        self.max_lines = max_lines
        self._index: _MemoryText | None = None

    def command_tokens(self) -> list[str]:
        return [FIND]

    def argument_commands(self) -> set[str]:
        return {FIND}

    def reset(self) -> None:
        self._index = None

    def run(self, command: str, argument: list[str], memory: Memory) -> list[str]:
        if command != FIND:
            return error_observation(f"unknown command {command}")
        if not argument:
            return error_observation("empty argument")
        if "\n" in argument:
            return [OBS_OPEN, OBS_CLOSE]  # a line never contains a newline
        index = self._index_of(memory)
        needle_codes = [_CODER.encode(token) for token in argument]
        if not index.catch_up() or None in needle_codes:
            return error_observation("too many distinct tokens to search")

        observation = [OBS_OPEN]
        needle, text, line_starts = "".join(needle_codes), index.text, index.line_starts
        num_lines, found = 0, text.find(needle)
        while found != -1:
            line = bisect_right(line_starts, found) - 1
            line_start = line_starts[line]
            line_end = line_starts[line + 1] - 1 if line + 1 < len(line_starts) else len(text)
            if num_lines == self.max_lines:
                observation.append(TRUNC)
                break
            if num_lines:
                observation.append("\n")
            observation += memory.tokens[line_start:line_end]
            num_lines += 1
            found = text.find(needle, line_end + 1)  # each line once, even if it matches twice
        observation.append(OBS_CLOSE)
        return observation

    def _index_of(self, memory: Memory) -> _MemoryText:
        # A new Memory object means a new sequence (ToolEnvironment.reset builds one); a shorter one
        # means the tape was rewritten, which the protocol never does, but rebuild rather than lie.
        if self._index is None or self._index.memory is not memory or len(memory) < len(self._index.text):
            self._index = _MemoryText(memory)
        return self._index

    def __repr__(self) -> str:
        return f"SearchMemory(max_lines={self.max_lines})"
