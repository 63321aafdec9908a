"""What addition and multiplication traces share: numbers, carry thoughts, operand cursors, the readout.

**Digit thoughts and carry thoughts use different tokens.** A column of long arithmetic is written as two
thoughts: the result digit (``0``-``9``) and the carry into the next column as a capital letter,
``A`` = carry 0, ``B`` = carry 1, ... ``J`` = carry 9 (addition only ever writes ``A``/``B``; a
multiplication row carries up to 8, ``I``). Because the two kinds never share a token, the readout can
tell a digit from a carry by looking at the token alone (prototype lesson: no phase bit to carry).

**Operand cursors** move first and read second. :func:`next_digit_leftwards` walks an operand from its
least significant digit; when the operand is exhausted (the move is refused at the start of memory, or
the read is not a digit) the cursor stays, or steps back, so asking again gives "exhausted" again.
Operands of different lengths therefore need no bookkeeping: a missing digit is a 0.

**The readout** (:func:`read_back`): the answer was written least significant digit first, as
digit/carry thought pairs; a pointer that followed the writing stands on the last of them, so after
``[ANS]`` it walks left, emits every digit it reads as output, skips carries, and stops at ``=``.

Reference answers are computed with :mod:`decimal` (the calculator tool's exact arithmetic, tested against Python's
ints), independently of the traces, because Python's ``int(str)`` refuses more than 4,300 digits.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..tools import calculator
from .pointers import Pointer, PointerTrace

DIGITS = frozenset("0123456789")
CARRY_LETTERS = "ABCDEFGHIJ"
_CARRY_VALUES = {letter: value for value, letter in enumerate(CARRY_LETTERS)}


def carry_letter(carry: int) -> str:
    return CARRY_LETTERS[carry]


def is_carry_letter(token: str) -> bool:
    return token in _CARRY_VALUES


def random_number(rng: random.Random, num_digits: int) -> str:
    """A uniform ``num_digits``-digit positive integer (no leading zero; 1..9 for one digit)."""
    return str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=num_digits - 1))


def exact(operation: str, a: str, b: str) -> str:
    """``a + b`` or ``a * b`` of decimal strings, exactly, at any length (the calculator tool's arithmetic)."""
    return calculator.exact({"+": "add", "*": "mul"}[operation], a, b)


def parse_operands(text: str, operator: str, task: str) -> tuple[str, str]:
    """``"12+34"`` (an ``=`` at the end is allowed) -> ``("12", "34")``; ValueError names the format."""
    body = text.strip().removesuffix("=")
    parts = body.split(operator)
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() and part[0] != "0" for part in parts):
        raise ValueError(
            f"{task}: expected two positive integers without leading zeros joined by {operator!r}, "
            f"like '12{operator}345', got {text!r}"
        )
    return parts[0], parts[1]


def next_digit_leftwards(cursor: Pointer) -> int | None:
    """Move left and read: the next digit of the operand, or ``None`` once it is exhausted.

    An exhausted cursor stays put (refused at the start of memory) or steps back onto the operand's
    last digit (it read the operator in front), so the next call reports ``None`` again.
    """
    if not cursor.move_left():
        return None
    token = cursor.read()
    if token in DIGITS:
        return int(token)
    cursor.move_right()
    return None


def next_digit_rightwards(cursor: Pointer) -> int | None:
    """Move right and read a row of digit/carry pairs: the next digit (the cursor then skips onto its
    carry), or ``None`` at the row's end (the cursor steps back onto the row's last carry)."""
    cursor.move_right()
    token = cursor.read()
    if token in DIGITS:
        cursor.move_right()
        return int(token)
    cursor.move_left()
    return None


def write_column_sums(
    trace: PointerTrace, read_column: Callable[[], list[int | None]], readout: Pointer
) -> None:
    """Long addition of numbers whose digits ``read_column`` reads one column at a time (``None`` for a
    number already exhausted): write each column's digit and carry letter, the readout following,
    until every number is exhausted and the carry is 0."""
    carry = 0
    while True:
        digits = read_column()
        if all(digit is None for digit in digits) and carry == 0:
            return
        total = sum(digit or 0 for digit in digits) + carry
        carry = total // 10
        trace.write_followed((str(total % 10), carry_letter(carry)), followers=(readout,))


def read_back(readout: Pointer) -> None:
    """Emit the reversed digit thoughts left of ``readout`` as output, skipping carries, up to ``=``."""
    while True:
        readout.move_left()
        token = readout.read()
        if token in DIGITS:
            readout.trace.write(token)
        elif token == "=":
            return
        elif not is_carry_letter(token):
            raise AssertionError(f"the readout met {token!r}, neither a digit, a carry nor '='")
