"""Long multiplication of an n-digit number by a k-digit one with pointer memory (paper §3.2, App. D.3).

Prompt ``a*b=`` (``*`` stands for the paper's ``×``, which is not ASCII). Training: ``n1 ~ U{1..10}``,
``n2 ~ U{1..k}``; test: ``a`` exactly ``size`` digits and ``b`` exactly ``k``. Operands are uniform
positive integers, so the product never has a leading zero to strip.

The paper's algorithm: one partial product per digit of ``b`` (reversed, with carries), then their sum,
then the readout. It uses max(k, 2) pointers and walks them back and forth; here more pointers stand
where they will be needed, so every decision is local and nothing is walked twice:

- **a cursors**, one per row (``pointer1``, then ``pointer3``.. for rows 1..k-1): row ``j`` multiplies
  with cursor ``j``, which has waited on ``*`` since the locate phase (resetting one cursor would be a
  walk of 3n tokens per row).
- **b cursor** (``pointer2``): moves left once per row and is re-read in every column, so the multiplier
  digit is never carried in the model's state across a row.
- **row cursors** (k >= 2 only), one per row: follow the writing until their row is opened, then read
  it during the summation.
- **readout** (the last pointer): follows every written token, reads the answer back after ``[ANS]``.

That is ``2k + 2`` pointers for k >= 2 (6 for k = 2); k = 1 has no rows to sum, so no row cursor: 3. The trace:

- **locate**: the first a cursor walks right to ``*`` with every other pointer in step; the b cursor
  walks on to ``=`` with the row cursors and the readout in step.
- **row j**: the b cursor moves left and reads the next multiplier digit (``*``: no more rows). Rows
  after the first open with ``+`` and ``j`` shift columns ``0A``. Each column: the a cursor moves left
  and reads, the b cursor is re-read, the digit and carry letter are written (a carry can reach 8,
  ``I``). An exhausted ``a`` (move refused with ``[ERR]``) writes the carry as a final digit; exhausted
  with carry ``A``, the row ends. ``=`` closes the rows.
- **sum** (k >= 2): column by column, every row cursor moves right and reads its next digit (then steps
  onto its carry) or, at its row's end, steps back; digit and carry are written. A row that does not
  exist (``b`` shorter than ``k``) reads ``=`` at once and counts as 0.
- **readout**: as in addition, back to the ``=`` in front of the answer.

Memory for ``47*12=``: ``47*12=4B9A+0A7A4A=4A6B5A[ANS]564``. Every next model token is a function of the
last 10 tokens for k = 1 and 2, of the last 14 for k = 3 (a sum column reads three rows).
"""

from __future__ import annotations

import random

from ..tools.base import ToolEnvironment
from ..tools.pointer_memory import MAX_POINTERS, PointerMemory
from .arithmetic import (
    carry_letter,
    exact,
    next_digit_leftwards,
    next_digit_rightwards,
    parse_operands,
    random_number,
    read_back,
    write_column_sums,
)
from .base import Instance, Task, Trace, check_option
from .pointers import PointerTrace

#: at most 2k + 2 pointers (k a cursors, the b cursor, k row cursors, the readout) must fit the tool's maximum
MAX_MULTIPLIER_DIGITS = (MAX_POINTERS - 2) // 2


def num_pointers(k: int) -> int:
    """a cursors, the b cursor, row cursors (only when there is a sum to do), the readout."""
    return k + 1 + (k if k >= 2 else 0) + 1


def multiplication_prompt(a: str, b: str) -> list[str]:
    return [*a, "*", *b, "="]


def multiplication_trace(a: str, b: str, k: int) -> Trace:
    """The reference trace for ``a*b=`` where ``b`` has at most ``k`` digits."""
    trace = PointerTrace(multiplication_prompt(a, b), num_pointers(k))
    pointers = trace.pointers
    # pointer1 and pointer2 as in the paper (a and b); then the other a cursors, the row cursors, the readout
    a_cursors = [pointers[0], *pointers[2 : k + 1]]
    b_cursor = pointers[1]
    row_cursors = pointers[k + 1 : -1]
    readout = pointers[-1]

    # Locate: the a cursors stop on '*', the b cursor, the row cursors and the readout on '='.
    a_cursors[0].walk_right_until({"*"}, followers=(*a_cursors[1:], b_cursor, *row_cursors, readout))
    b_cursor.walk_right_until({"="}, followers=(*row_cursors, readout))

    # One partial product per multiplier digit, least significant digit first, shifted by its place.
    row = 0
    while next_digit_leftwards(b_cursor) is not None:
        # Row cursors of rows not yet opened follow the writing; this row's cursor stops on its '+'.
        followers = (readout, *row_cursors[row + 1 :])
        if row > 0:
            trace.write_followed("+", followers=(readout, *row_cursors[row:]))
            trace.write_followed("0A" * row, followers)
        carry = 0
        while True:
            digit = next_digit_leftwards(a_cursors[row])
            if digit is None and carry == 0:
                break
            value = carry if digit is None else digit * int(b_cursor.read()) + carry
            carry = value // 10
            trace.write_followed((str(value % 10), carry_letter(carry)), followers)
        row += 1
    trace.write_followed("=", followers=(readout,))

    # Sum the partial products column by column (with one multiplier digit the row is the answer).
    if row_cursors:
        write_column_sums(trace, lambda: [next_digit_rightwards(cursor) for cursor in row_cursors], readout)

    trace.begin_answer()
    read_back(readout)
    return trace.finish()


class MultiplicationTask(Task):
    """``a*b`` with ``a`` of ``size`` digits and ``b`` of up to ``k`` digits (the paper: k = 1 and 2)."""

    name = "multiplication"
    size_unit = "digits of the first operand"
    default_train_max_size = 10

    def __init__(self, k: int = 2):
        meaning = (
            "the number of digits of the multiplier "
            f"(for k >= 2 the trace needs 2k+2 pointers, and the tool has {MAX_POINTERS})"
        )
        self.k = check_option(self.name, "k", k, 1, MAX_MULTIPLIER_DIGITS, meaning)

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[PointerMemory(num_pointers(self.k))])

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.instance(random_number(rng, size), random_number(rng, self.k))

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        first_digits, second_digits = rng.randint(1, max_size), rng.randint(1, self.k)
        return self.instance(random_number(rng, first_digits), random_number(rng, second_digits))

    def instance(self, a: str, b: str) -> Instance:
        """The instance for given operands (positive, no leading zeros, ``b`` at most ``k`` digits)."""
        if len(b) > self.k:
            raise ValueError(f"{self.name}: the multiplier {b!r} has more than k={self.k} digits")
        return Instance(
            task=self.name,
            size=len(a),
            prompt=multiplication_prompt(a, b),
            trace=multiplication_trace(a, b, self.k),
            answer=exact("*", a, b),
            environment=self.make_environment,
            metadata={"a": a, "b": b, "k": self.k},
        )

    def instance_from_text(self, text: str) -> Instance:
        """``"12345*67"`` (a trailing ``=`` allowed), the multiplier of at most ``k`` digits."""
        return self.instance(*parse_operands(text, "*", self.name))
