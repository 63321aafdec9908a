"""Tower of Hanoi with pointer memory: the iterative algorithm (one pointer) and the recursive one (two)
(paper §3.4, App. D.4).

``n`` disks with sizes drawn without replacement from 1..100 start on rod A, largest at the bottom; the
prompt lists them from the base up, e.g. ``(7)(5)(2)``. A move is written ``(5)AC$``: disk 5 from rod A
to rod C. The optimal solution has ``2^n - 1`` moves, so traces grow as ``2^n``. Training: up to 8 disks
(iterative) or 7 (recursive), ``n ~ U{1..max}``; test: exactly ``size`` disks.

**Iterative** (``hanoi_iterative``). The output is one line per move: the move, then the state it
leads to. A state is the direction of the smallest disk followed by every disk, smallest first, with
the rod it is on: ``<2C5A7A`` says disk 2 is on C, disks 5 and 7 on A, and the smallest disk cycles
A -> C -> B -> A (``>``: A -> B -> C -> A). Listing disks by size rather than rods as stacks makes
the algorithm's two rules a matter of rod letters alone, with no size comparisons:

* odd moves: the smallest disk (the first entry) moves one step along its cycle;
* even moves: the first entry whose rod differs from the smallest disk's moves to the third rod (it
  is the smaller of the two other tops: every smaller disk sits on the smallest disk's rod).

Trace, with the one pointer::

    parity     read the input from the base, writing C, B, C, ... one thought per disk; reading past
               the input lands on the first of those letters. The last letter is the first target of
               the smallest disk ('C': n odd), which gives the direction mark.
    start      write the mark, then walk left over the input, writing each disk (digits read right to
               left, written left to right) on rod A, smallest first, until the move left is refused
               at the start of memory ([ERR]); end the line. Walk right to the state's mark, [ANS].
    each move  the pointer has just read the mark of the current state. It reads the first entry.
               If that rod is not where the previous move went (just read while skipping it) the
               smallest disk moves: write the move and the new state's start (mark, smallest disk,
               its new rod), then copy the rest of the state token by token. Otherwise it reads on to
               the first entry on another rod, writes that move, walks back to the mark and copies the
               state changing that one rod letter. Either way it then walks right over the move just
               written to the new state's mark. When the search reaches the end of the state, every
               disk is on one rod: [EOS].

Output for ``(5)(2)``: ``(2)AB$>2B5A\\n(5)AC$>2B5C\\n(2)BC$>2C5C\\n``. One decision is not local: after
the changed entry, an even move must copy the rest verbatim, so the model carries "changed" across at
most ``n`` entries of one state (one bit, over a span bounded by the number of disks).

**Recursive** (``hanoi_recursive``). The model writes the move list of the 0-, 1-, ..., n-disk puzzle
(the smallest disks first), each list between ``#`` separators; the last one, after ``[ANS]``, is the
output. ``pointer1`` marks the current disk in the input; ``pointer2`` copies the previous list twice:
once with B and C swapped, then the middle move "this disk from A to C", then again with A and B
swapped. ``pointer1`` probes whether its disk is the base (the move left is refused): then this list is
the last one, ``[ANS]`` before it and ``[EOS]`` after it. Memory for ``(5)(2)``:
``(5)(2)##(2)AC$#[ANS](2)AB$(5)AC$(2)BC$``.
"""

from __future__ import annotations

import random
import re

from ..tools.base import ToolEnvironment
from ..tools.pointer_memory import PointerMemory
from .base import Instance, Task, Trace
from .pointers import Pointer, PointerTrace

RODS = ("A", "B", "C")
#: the smallest disk's direction: ">" cycles A -> B -> C -> A, "<" cycles A -> C -> B -> A
MARKS = {">": {"A": "B", "B": "C", "C": "A"}, "<": {"A": "C", "C": "B", "B": "A"}}
LARGEST_DISK = 100
#: 16 disks are 65,535 moves and ~20M trace tokens; beyond that a trace no longer fits in memory
MAX_DISKS = 16
BC_SWAP = {"B": "C", "C": "B"}
AB_SWAP = {"A": "B", "B": "A"}


def hanoi_prompt(disks: list[int]) -> list[str]:
    """Disks from the base up (largest first), e.g. ``(7)(5)(2)``."""
    return [*"".join(f"({disk})" for disk in disks)]


def move_text(disk: int | str, source: str, target: str) -> str:
    return f"({disk}){source}{target}$"


def third_rod(first: str, second: str) -> str:
    return next(rod for rod in RODS if rod not in (first, second))


def direction_mark(num_disks: int) -> str:
    """The smallest disk goes A -> C first when the number of disks is odd, A -> B when it is even."""
    return "<" if num_disks % 2 else ">"


# --- the iterative algorithm -----------------------------------------------------------------------
def iterative_hanoi_trace(disks: list[int]) -> Trace:
    """The reference trace of the iterative algorithm for ``disks`` (from the base up)."""
    trace = PointerTrace(hanoi_prompt(disks), num_pointers=1)
    (cursor,) = trace.pointers

    # Parity: one letter per disk, C first; reading past the input lands on the first letter.
    letter = "C"
    while (token := cursor.read()) not in ("B", "C"):
        if token == ")":
            trace.write(letter)
            letter = "B" if letter == "C" else "C"
        cursor.move_right()
    mark = ">" if letter == "C" else "<"  # the letter after the last one written: its opposite

    # The initial state: every disk on A, smallest first, read right to left off the input.
    trace.write(mark)
    digits: list[str] = []
    while cursor.move_left():
        token = cursor.read()
        if token == ")":
            digits = []
        elif token == "(":
            trace.write(*reversed(digits), "A")
        else:
            digits.append(token)
    trace.write("\n")
    cursor.walk_right_until(MARKS)
    trace.begin_answer()

    previous_target = None
    while True:
        # The cursor has just read the mark of the current state.
        size, rod = _read_entry(cursor)
        if rod != previous_target:  # odd move: the smallest disk moves along its cycle
            target = MARKS[mark][rod]
            trace.write_text(move_text(size, rod, target))
            trace.write(mark, *size, target)
            _copy_state(cursor, changing=None)
        else:  # even move: the first disk off the smallest disk's rod moves to the third rod
            smallest_rod = rod
            while rod == smallest_rod:
                entry = _read_entry(cursor)
                if entry is None:  # every disk is on one rod: solved
                    return trace.finish()
                size, rod = entry
            target = third_rod(smallest_rod, rod)
            trace.write_text(move_text(size, rod, target))
            cursor.walk_left_until(MARKS)
            trace.write(mark)
            _copy_state(cursor, changing=(smallest_rod, target))
        cursor.walk_right_until(MARKS)  # over the move just written, onto the new state's mark
        previous_target = target


def _read_entry(cursor: Pointer) -> tuple[str, str] | None:
    """Read the next ``size rod`` entry of a state: (size digits, rod), or None at the line's end."""
    digits = []
    while True:
        cursor.move_right()
        token = cursor.read()
        if token == "\n":
            return None
        if token in RODS:
            return "".join(digits), token
        digits.append(token)


def _copy_state(cursor: Pointer, changing: tuple[str, str] | None) -> None:
    """Copy the rest of the state line. ``changing=(smallest_rod, target)``: the first rod letter that is
    not ``smallest_rod`` is written as ``target`` (the even move); after it the copy is verbatim."""
    while True:
        cursor.move_right()
        token = cursor.read()
        if changing is not None and token in RODS and token != changing[0]:
            cursor.trace.write(changing[1])
            changing = None
        else:
            cursor.trace.write(token)
        if token == "\n":
            return


# --- the recursive algorithm -----------------------------------------------------------------------
def recursive_hanoi_trace(disks: list[int]) -> Trace:
    """The reference trace of the recursive algorithm for ``disks`` (from the base up)."""
    trace = PointerTrace(hanoi_prompt(disks), num_pointers=2)
    disk, lists = trace.pointers

    trace.write("#", "#")  # the 0-disk puzzle's empty move list
    disk.walk_right_until({"#"}, followers=(lists,))  # both stop on the first '#'
    disk.walk_left_until({"("})  # the top disk, the smallest
    while True:
        is_base = not disk.move_left()  # refused at the start of memory: the last list
        if is_base:
            trace.begin_answer()
        else:
            disk.move_right()
        _copy_list(lists, BC_SWAP)  # the smaller disks to B
        trace.write("(")  # this disk to C
        while (token := _step_right_and_read(disk)) != ")":
            trace.write(token)
        trace.write(")", "A", "C", "$")
        disk.walk_left_until({"("})
        lists.walk_left_until({"#"})
        _copy_list(lists, AB_SWAP)  # the smaller disks from B onto C
        if not disk.move_left():  # no larger disk: done
            return trace.finish()
        trace.write("#")
        disk.walk_left_until({"("})


def _step_right_and_read(pointer: Pointer) -> str:
    pointer.move_right()
    return pointer.read()


def _copy_list(lists: Pointer, swap: dict[str, str]) -> None:
    """Copy the move list after the pointer's '#' up to the next '#', swapping two rods."""
    while (token := _step_right_and_read(lists)) != "#":
        lists.trace.write(swap.get(token, token))


# --- checking answers ------------------------------------------------------------------------------
_MOVE = re.compile(r"\((\d+)\)([ABC])([ABC])\$")
_ITERATIVE_LINE = re.compile(r"(\((\d+)\)([ABC])([ABC])\$)([<>](?:\d+[ABC])+)")


class HanoiState:
    """Rods as stacks (bottom first); :meth:`move` refuses illegal moves."""

    def __init__(self, disks: list[int]):
        self.rods = {"A": sorted(disks, reverse=True), "B": [], "C": []}

    def move(self, disk: int, source: str, target: str) -> bool:
        rods = self.rods
        if source == target or not rods[source] or rods[source][-1] != disk:
            return False
        if rods[target] and rods[target][-1] < disk:
            return False
        rods[target].append(rods[source].pop())
        return True

    def solved(self) -> bool:
        return not self.rods["A"] and not self.rods["B"]

    def entries(self) -> str:
        """The disks smallest first, each with its rod: ``2C5A7A``."""
        where = {disk: rod for rod, stack in self.rods.items() for disk in stack}
        return "".join(f"{disk}{where[disk]}" for disk in sorted(where))


def optimal_moves(disks: list[int]) -> list[tuple[int, str, str]]:
    """The 2^n - 1 moves of the optimal solution (the reference answer, computed recursively)."""
    by_size = sorted(disks)
    moves: list[tuple[int, str, str]] = []

    def solve(count: int, source: str, target: str, spare: str) -> None:
        if count:
            solve(count - 1, source, spare, target)
            moves.append((by_size[count - 1], source, target))
            solve(count - 1, spare, target, source)

    solve(len(disks), "A", "C", "B")
    return moves


class _HanoiTask(Task):
    size_unit = "disks"
    max_size = MAX_DISKS

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.instance(sorted(rng.sample(range(1, LARGEST_DISK + 1), size), reverse=True))

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        return self._sample(rng, rng.randint(1, max_size))

    def instance_from_text(self, text: str) -> Instance:
        """``"(7)(5)(2)"`` or ``"7 5 2"``: distinct sizes in 1..100, from the base up (decreasing)."""
        return self.instance(self._disks(text))

    def prompt_from_text(self, text: str) -> list[str]:
        """As :meth:`instance_from_text`, without building the 2^n-move reference trace."""
        return hanoi_prompt(self._disks(text))

    def _disks(self, text: str) -> list[int]:
        # "(7)(5)(2)", as the prompt writes them, or "7 5 2" / "7,5,2"; nothing else
        well_formed = re.fullmatch(r"\s*(?:\(\d+\)\s*)+", text) or re.fullmatch(r"\s*\d+(?:[\s,]+\d+)*\s*", text)
        sizes = [int(size) for size in re.findall(r"\d+", text)] if well_formed else []
        if (
            not sizes
            or len(sizes) > MAX_DISKS
            or sizes != sorted(set(sizes), reverse=True)
            or not all(1 <= size <= LARGEST_DISK for size in sizes)
        ):
            raise ValueError(
                f"{self.name}: expected 1..{MAX_DISKS} distinct disk sizes in 1..{LARGEST_DISK}, "
                f"largest first, like '(7)(5)(2)' or '7 5 2', got {text!r}"
            )
        return sizes

    def instance(self, disks: list[int]) -> Instance:
        """The instance for disk sizes listed from the base up (strictly decreasing)."""
        return Instance(
            task=self.name,
            size=len(disks),
            prompt=hanoi_prompt(disks),
            trace=self.trace(disks),
            answer=self.render_answer(disks, optimal_moves(disks)),
            environment=self.make_environment,
            metadata={"disks": list(disks)},
        )

    def check(self, instance: Instance, answer: str) -> bool:
        """Any legal sequence of moves (in this variant's format) that ends with every disk on C."""
        state = HanoiState(instance.metadata["disks"])
        moves = self.parse_moves(instance.metadata["disks"], answer)
        return moves is not None and all(state.move(*move) for move in moves) and state.solved()


class IterativeHanoiTask(_HanoiTask):
    """One pointer; the output is every move followed by the state it leads to."""

    name = "hanoi_iterative"
    default_train_max_size = 8

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[PointerMemory(1)])

    def trace(self, disks: list[int]) -> Trace:
        return iterative_hanoi_trace(disks)

    @staticmethod
    def render_answer(disks: list[int], moves: list[tuple[int, str, str]]) -> str:
        mark, state, lines = direction_mark(len(disks)), HanoiState(disks), []
        for move in moves:
            state.move(*move)
            lines.append(f"{move_text(*move)}{mark}{state.entries()}\n")
        return "".join(lines)

    @staticmethod
    def parse_moves(disks: list[int], answer: str) -> list[tuple[int, str, str]] | None:
        """The moves of an answer whose every line is a move and the correct state after it, else None."""
        mark, state, moves = direction_mark(len(disks)), HanoiState(disks), []
        if not answer.endswith("\n"):
            return None
        for line in answer[:-1].split("\n"):
            match = _ITERATIVE_LINE.fullmatch(line)
            if match is None:
                return None
            move = (int(match.group(2)), match.group(3), match.group(4))
            if not state.move(*move) or match.group(5) != f"{mark}{state.entries()}":
                return None
            moves.append(move)
        return moves


class RecursiveHanoiTask(_HanoiTask):
    """Two pointers; the output is the move list alone."""

    name = "hanoi_recursive"
    default_train_max_size = 7

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[PointerMemory(2)])

    def trace(self, disks: list[int]) -> Trace:
        return recursive_hanoi_trace(disks)

    @staticmethod
    def render_answer(disks: list[int], moves: list[tuple[int, str, str]]) -> str:
        return "".join(move_text(*move) for move in moves)

    @staticmethod
    def parse_moves(disks: list[int], answer: str) -> list[tuple[int, str, str]] | None:
        moves = [(int(size), source, target) for size, source, target in _MOVE.findall(answer)]
        return moves if "".join(move_text(*move) for move in moves) == answer else None
