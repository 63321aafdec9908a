"""Writing a reference trace: the hard-coded agent's side of the conversation with the tools.

A :class:`TraceWriter` records what the agent generates (thoughts, commands, outputs) and what the tools
answer (observations), each token with its role, and keeps its own copy of the memory (prompt + thoughts
+ outputs) so the agent can compute what a tool will see. It never calls a tool: the observations it
records are the agent's *prediction* of the tool's answer, which :func:`~hf_toolssm.tasks.base.replay`
then checks against the real tools. Role bookkeeping mirrors ``ToolEnvironment``: a generated token is a
thought before ``[ANS]`` and an output from ``[ANS]`` on; ``[ANS]`` and every thought or output are
appended to memory, ``[EOS]``, commands and observations are not.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tools.base import ANS, EOS, Role
from .base import Trace


class TraceWriter:
    def __init__(self, prompt: Sequence[str]):
        self.prompt: list[str] = list(prompt)
        self.memory: list[str] = list(prompt)
        self.tokens: list[str] = []
        self.roles: list[Role] = []
        self.in_answer = False

    def write(self, *tokens: str) -> None:
        """Generate thoughts (before ``[ANS]``) or outputs (from ``[ANS]`` on); they enter memory."""
        for token in tokens:
            if token == ANS:
                self.in_answer = True
            self.tokens.append(token)
            self.roles.append(Role.OUTPUT if self.in_answer else Role.THOUGHT)
            self.memory.append(token)

    def write_text(self, text: str) -> None:
        """Generate every character of ``text`` as one thought or output token."""
        self.write(*text)

    def begin_answer(self) -> None:
        """``[ANS]``: everything generated from here on is output."""
        self.write(ANS)

    def command(self, *tokens: str) -> None:
        """Generate command tokens (a command token and, for argument commands, its argument)."""
        self.tokens += tokens
        self.roles += [Role.COMMAND] * len(tokens)

    def observe(self, *tokens: str) -> None:
        """Record the observation the tool will inject after the last command."""
        self.tokens += tokens
        self.roles += [Role.OBSERVATION] * len(tokens)

    def finish(self) -> Trace:
        """Generate ``[EOS]`` and return the trace."""
        self.tokens.append(EOS)
        self.roles.append(Role.OUTPUT if self.in_answer else Role.THOUGHT)
        return Trace(self.tokens, self.roles)
