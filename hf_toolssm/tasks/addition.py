"""Multi-digit addition with three pointers (paper §3.1, App. D.3).

Prompt ``a+b=``, one character per token. Training: ``n1, n2 ~ U{1..5}`` independently, each operand a
uniform positive integer of that many digits; test: both operands exactly ``size`` digits.

Pointers: ``pointer1`` walks ``a``, ``pointer2`` walks ``b``, ``pointer3`` is the readout. The paper uses
two; a third one, which follows the writing instead of walking back to ``[ANS]`` later, makes every
decision depend on the last few tokens (prototype lesson 2). The trace:

- **locate**: ``pointer1`` walks right to ``+`` with pointers 2 and 3 in step, then ``pointer2`` walks on
  to ``=`` with ``pointer3`` in step. Each operand pointer now stands one past its operand, the readout
  on ``=``, the last memory token.
- **columns**: ``pointer1`` moves left and reads (the move is refused with ``[ERR]`` at the start of
  memory: ``a`` is exhausted); ``pointer2`` moves left and reads (a ``+``: ``b`` is exhausted, step back
  right). A missing digit counts as 0. The sum digit and the carry letter (``A`` = 0, ``B`` = 1) are
  written, ``pointer3`` moving right after each so that it always stands on the last thought. With
  both operands exhausted a carry ``B`` is written as the column ``1A``; with carry ``A`` the loop ends.
- **readout**: ``[ANS]``, then ``pointer3`` moves left and reads: a digit is emitted as output, a carry
  letter is skipped, ``=`` ends the trace with ``[EOS]``.

One column, 7 + 8 with no carry in::

    [pointer1.move_left()][pointer1.read()]7[pointer2.move_left()][pointer2.read()]8
    5[pointer3.move_right()]B[pointer3.move_right()]

Memory at the end, for ``57+8=``: ``57+8=5B6A[ANS]65``. About 26 tokens per digit: 5 + 4 to locate, 10
per column, 7 to read back. Every next model token is a function of the last 9 tokens
(``tests/test_tasks.py`` checks it the way the paper's Theorem 2.2 learner would).
"""

from __future__ import annotations

import random

from ..tools.base import ToolEnvironment
from ..tools.pointer_memory import PointerMemory
from .arithmetic import (
    exact,
    next_digit_leftwards,
    parse_operands,
    random_number,
    read_back,
    write_column_sums,
)
from .base import Instance, Task, Trace
from .pointers import PointerTrace

NUM_POINTERS = 3


def addition_prompt(a: str, b: str) -> list[str]:
    return [*a, "+", *b, "="]


def addition_trace(a: str, b: str) -> Trace:
    """The reference trace for ``a+b=``."""
    trace = PointerTrace(addition_prompt(a, b), NUM_POINTERS)
    first, second, readout = trace.pointers

    # Locate: each operand pointer ends one past its operand, the readout on '=' (the last memory token).
    first.walk_right_until({"+"}, followers=(second, readout))
    second.walk_right_until({"="}, followers=(readout,))

    # Add column by column, least significant first; a missing digit counts as 0.
    write_column_sums(trace, lambda: [next_digit_leftwards(first), next_digit_leftwards(second)], readout)

    trace.begin_answer()
    read_back(readout)
    return trace.finish()


class AdditionTask(Task):
    """``a+b`` with pointer memory. Subclasses (``addition_ablations``) change the trace, not the problem."""

    name = "addition"
    size_unit = "digits per operand"
    default_train_max_size = 5

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[PointerMemory(NUM_POINTERS)])

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.instance(random_number(rng, size), random_number(rng, size))

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        first_digits, second_digits = rng.randint(1, max_size), rng.randint(1, max_size)
        return self.instance(random_number(rng, first_digits), random_number(rng, second_digits))

    def instance(self, a: str, b: str) -> Instance:
        """The instance for given operands (positive decimal strings without leading zeros)."""
        total = exact("+", a, b)
        return Instance(
            task=self.name,
            size=max(len(a), len(b)),
            prompt=addition_prompt(a, b),
            trace=self.trace(a, b, total),
            answer=self.expected_answer(total),
            environment=self.make_environment,
            metadata={"a": a, "b": b},
        )

    def trace(self, a: str, b: str, total: str) -> Trace:
        return addition_trace(a, b)

    def expected_answer(self, total: str) -> str:
        return total

    def instance_from_text(self, text: str) -> Instance:
        """``"123+4567"`` (a trailing ``=`` allowed)."""
        return self.instance(*parse_operands(text, "+", self.name))
