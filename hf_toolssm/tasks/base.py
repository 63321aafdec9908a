"""What every task shares: an instance with its role-tagged reference trace, the task interface, and replay.

A task turns a seeded random generator into an :class:`Instance`: a prompt, the reference trace a
hard-coded agent produces for it (paper §2.3: "trajectories are produced synthetically by a script that
runs the target algorithm"), and the answer that trace writes to the output stream. A :class:`Trace`
holds every token with its :class:`~hf_toolssm.tools.base.Role` (:meth:`Trace.segments` groups them
into role-tagged :class:`Segment` runs), so the data pipeline can mask the prompt and the observations
out of the loss without re-parsing anything.

:func:`replay` is the contract between a task and the tools: it drives a *fresh* environment with the
prompt and every token the model would generate, and fails the moment the tool injects anything other
than the observation the trace recorded. A trace that replays is a trace a model can imitate exactly.
"""

from __future__ import annotations

import inspect
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, ClassVar

from ..tools.base import EOS, EnvironmentFactory, Role, StopReason, Tool, ToolEnvironment

#: the roles that are not scored: the model reads them but never has to predict them
UNSCORED_ROLES = frozenset({Role.PROMPT, Role.OBSERVATION})


@dataclass
class Segment:
    """A run of consecutive trace tokens that share one role."""

    role: Role
    tokens: list[str]


@dataclass
class Trace:
    """The tokens after the prompt and the role of each.

    Stored flat, as ``ToolEnvironment`` stores a decode, rather than as segment objects: a 12-disk Hanoi
    trace has ~850k tokens in ~570k role runs, and that many small objects triple the time Python's
    garbage collector spends on every trace generated after it.
    """

    tokens: list[str]
    roles: list[Role]

    def segments(self) -> list[Segment]:
        """The trace as runs of one role."""
        runs = groupby(zip(self.tokens, self.roles, strict=True), key=itemgetter(1))
        return [Segment(role, [token for token, _ in run]) for role, run in runs]


@dataclass
class Instance:
    """One problem of a task: its prompt, its reference trace and the answer that trace produces.

    ``trace`` starts right after the prompt and ends with ``[EOS]``; ``answer`` is the output stream
    (every generated non-command token after ``[ANS]``) the trace writes. ``environment`` builds the
    fresh tool environment the trace runs in.
    """

    task: str
    size: int
    prompt: list[str]
    trace: Trace
    answer: str
    environment: EnvironmentFactory = field(repr=False, compare=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    def segments(self) -> list[Segment]:
        """The trace (prompt excluded) as runs of one role."""
        return self.trace.segments()

    def full_tokens(self) -> list[str]:
        """The prompt followed by the trace: the sequence a model is trained on."""
        return self.prompt + self.trace.tokens

    def roles(self) -> list[Role]:
        """The role of every token of :meth:`full_tokens`."""
        return [Role.PROMPT] * len(self.prompt) + self.trace.roles

    def __len__(self) -> int:
        """Tokens in :meth:`full_tokens`."""
        return len(self.prompt) + len(self.trace.tokens)


class Task(ABC):
    """A problem family with a complexity knob ``size`` (digits, disks, nodes) and its reference traces.

    Subclasses set the class attributes, implement :meth:`make_environment`, :meth:`sample`'s worker
    :meth:`_sample`, :meth:`_sample_train` and :meth:`instance_from_text`, and, when exact string
    equality is not the right notion of a correct answer, :meth:`check`.
    """

    #: the registry name, e.g. ``"addition"``
    name: ClassVar[str]
    #: what ``size`` counts, for messages and docs, e.g. ``"digits per operand"``
    size_unit: ClassVar[str]
    #: the paper's largest training size
    default_train_max_size: ClassVar[int]
    min_size: ClassVar[int] = 1
    #: ``None``: no upper bound beyond time and memory
    max_size: ClassVar[int | None] = None

    @abstractmethod
    def make_environment(self) -> ToolEnvironment:
        """A fresh environment with fresh tools: one per sequence (pass the bound method as a factory)."""

    def sample(self, rng: random.Random, size: int) -> Instance:
        """An instance of the test distribution at complexity ``size``."""
        self.validate_size(size, "size")
        return self._sample(rng, size)

    def sample_train(self, rng: random.Random, max_size: int | None = None) -> Instance:
        """An instance of the paper's training distribution, with sizes up to ``max_size``."""
        max_size = self.default_train_max_size if max_size is None else max_size
        self.validate_size(max_size, "max_size")
        return self._sample_train(rng, max_size)

    def check(self, instance: Instance, answer: str) -> bool:
        """Whether ``answer`` (an output stream) solves ``instance``."""
        return answer == instance.answer

    #: whether :meth:`check_final_state` judges what the model did, beside what it answered (coding: the files)
    checks_final_state: ClassVar[bool] = False

    def check_final_state(self, instance: Instance, tools: Sequence[Tool]) -> bool:
        """Whether the tools as a decode left them (``ToolGenerationResult.tools``) solve ``instance``: the
        paper's pass rate for tasks that change the world, not only the output stream."""
        raise NotImplementedError(f"{self.name} is judged by its answer alone (checks_final_state is False)")

    @abstractmethod
    def instance_from_text(self, text: str) -> Instance:
        """The instance (prompt, reference trace and answer) for a problem a person typed, e.g.
        ``"123+4567"``: what ``toolssm solve`` decodes and checks the model against; ValueError names
        the expected format if ``text`` is malformed."""

    def prompt_from_text(self, text: str) -> list[str]:
        """The prompt tokens of :meth:`instance_from_text` (tasks whose traces are costly build it alone)."""
        return self.instance_from_text(text).prompt

    @abstractmethod
    def _sample(self, rng: random.Random, size: int) -> Instance: ...

    @abstractmethod
    def _sample_train(self, rng: random.Random, max_size: int) -> Instance: ...

    def validate_size(self, size: int, what: str) -> None:
        low, high = self.min_size, self.max_size
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < low
            or (high is not None and size > high)
        ):
            bound = f"in {low}..{high}" if high is not None else f">= {low}"
            raise ValueError(
                f"{self.name}: {what} is the number of {self.size_unit} and must be an int {bound}, "
                f"got {size!r}"
            )

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{type(self).__name__}({options})"

    def options(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this task with :func:`get_task`."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}


def check_option(task: str, name: str, value: Any, low: int, high: int, meaning: str) -> int:
    """Validate an integer task option; the error says what the option means and which values work."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{task}: {name} is {meaning} and must be an int in {low}..{high}, got {value!r}")
    return value


# --- replay ----------------------------------------------------------------------------------------
class ReplayMismatch(AssertionError):
    """The environment did not reproduce the trace: the trace and the tools disagree."""


@dataclass
class ReplayResult:
    answer: str
    correct: bool
    num_tokens: int
    num_tool_calls: int


def replay(instance: Instance, env: ToolEnvironment | None = None) -> ReplayResult:
    """Run ``instance``'s trace through a fresh environment, as a model generating it would.

    Feeds the prompt, then every non-observation token of the trace; after each one the environment
    must inject exactly the observation tokens the trace records next (no more, no fewer), and at the
    end the environment's roles must equal the trace's and the trace must have stopped on ``[EOS]``.
    Raises :class:`ReplayMismatch` otherwise. Returns the environment's answer and whether it equals
    ``instance.answer``.
    """
    env = instance.environment() if env is None else env
    tokens, roles = instance.full_tokens(), instance.roles()
    env.reset(instance.prompt)
    position = len(instance.prompt)
    while position < len(tokens):
        if roles[position] is Role.OBSERVATION:
            raise _mismatch(
                instance, tokens, position, "the trace has an observation the environment did not inject"
            )
        if env.stop_reason is not None:
            raise _mismatch(
                instance, tokens, position, f"the environment stopped ({env.stop_reason.value}) early"
            )
        injected = env.step(tokens[position])
        position += 1
        end = position + len(injected)
        if injected != tokens[position:end] or any(
            role is not Role.OBSERVATION for role in roles[position:end]
        ):
            raise _mismatch(
                instance,
                tokens,
                position,
                f"the environment injected {injected}, the trace has "
                f"{tokens[position:end]} ({[role.value for role in roles[position:end]]})",
            )
        position = end
    if tokens[-1] != EOS or env.stop_reason is not StopReason.EOS:
        raise _mismatch(instance, tokens, len(tokens) - 1, "the trace must end with [EOS]")
    if env.roles != roles:
        first = next(i for i, (ours, theirs) in enumerate(zip(roles, env.roles, strict=True)) if ours is not theirs)
        raise _mismatch(
            instance,
            tokens,
            first,
            f"the trace says {roles[first].value}, the environment {env.roles[first].value}",
        )
    answer = env.answer()
    return ReplayResult(answer, answer == instance.answer, len(tokens), env.num_tool_calls)


def _mismatch(instance: Instance, tokens: list[str], position: int, message: str) -> ReplayMismatch:
    context = "".join(tokens[max(0, position - 40) : position])
    return ReplayMismatch(
        f"{instance.task} (size {instance.size}), token {position}: {message}; after ...{context!r}"
    )
