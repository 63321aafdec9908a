"""Multiplication co-trained with auxiliary addition (paper §3.3, App. D.8).

The primary task is ``n x k`` multiplication (k = 2 in the paper), trained on first operands of up to 20
digits. With probability ``weight`` (the paper's w in {0, 0.33, 0.5, 0.6}) a training example is an
auxiliary ``n+n`` addition instead: ``n ~ U{1..max_size}``, both operands ``n`` digits. Tests
(:meth:`MixtureTask.sample`) are multiplication; ``get_task("addition")`` scores the auxiliary task.

Both tasks share one vocabulary and one tool, the pointer memory (:meth:`MixtureTask.make_environment`
gives the multiplication's pointers; an addition instance carries the three pointers it uses, the first
three of those); their traces share the digit/carry thoughts, the operand cursors and the readout, which
is what lets the auxiliary task help.
"""

from __future__ import annotations

import random

from ..tools.base import ToolEnvironment
from .addition import AdditionTask
from .base import Instance, Task
from .multiplication import MultiplicationTask


class MixtureTask(Task):
    name = "mixture"
    size_unit = "digits of the first operand"
    default_train_max_size = 20

    def __init__(self, weight: float = 0.5, k: int = 2):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(
                f"{self.name}: weight is the probability of an auxiliary addition example and "
                f"must be a number in [0, 1], got {weight!r}"
            )
        self.weight = weight
        self.k = k
        self.multiplication = MultiplicationTask(k)  # validates k
        self.addition = AdditionTask()

    def make_environment(self) -> ToolEnvironment:
        return self.multiplication.make_environment()

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.multiplication.sample(rng, size)

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        if rng.random() < self.weight:
            return self.addition.sample(rng, rng.randint(1, max_size))
        return self.multiplication.sample_train(rng, max_size)

    def instance_from_text(self, text: str) -> Instance:
        """A multiplication ``"123*45"``, or an auxiliary addition ``"123+45"``."""
        task = self.addition if "+" in text else self.multiplication
        return task.instance_from_text(text)
