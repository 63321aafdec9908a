"""What a tool-augmented decode returns for one sequence: the trace split into roles, the answer, why it stopped."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..tools.base import Role, StopReason, Tool, ToolEnvironment


@dataclass
class ToolGenerationResult:
    """One row of a tool-augmented decode.

    ``tokens``/``roles`` cover the whole trace, prompt included; ``answer`` is the output stream (every
    generated token after ``[ANS]`` that is neither a command nor an observation). ``tools`` are the row's
    tools as the decode left them, for checks of what the model did rather than said (the code sandbox's
    files: ``CodingTask.check_final_state``); a sandbox's directory lives as long as its result.
    """

    tokens: list[str]
    roles: list[Role]
    answer: str
    num_tool_calls: int
    stop_reason: StopReason | None
    num_model_tokens: int  # tokens the model generated (thoughts, commands, outputs)
    num_observation_tokens: int  # tokens the tools injected
    tools: Sequence[Tool] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_environment(cls, env: ToolEnvironment, stop_reason: StopReason | None) -> ToolGenerationResult:
        roles = list(env.roles)
        observed = sum(role is Role.OBSERVATION for role in roles)
        prompt = sum(role is Role.PROMPT for role in roles)
        return cls(
            tokens=list(env.tokens),
            roles=roles,
            answer=env.answer(),
            num_tool_calls=env.num_tool_calls,
            stop_reason=env.stop_reason or stop_reason,
            num_model_tokens=len(roles) - prompt - observed,
            num_observation_tokens=observed,
            tools=tuple(env.tools),
        )

    @property
    def generated_tokens(self) -> list[str]:
        """The trace after the prompt (model tokens and injected observations)."""
        return [token for token, role in zip(self.tokens, self.roles, strict=True) if role is not Role.PROMPT]

    def segments(self) -> list[tuple[Role, str]]:
        """Consecutive tokens of one role joined into text: [(Role.PROMPT, "12+34="), (Role.COMMAND, ...), ...]."""
        pairs = zip(self.tokens, self.roles, strict=True)
        return [(role, "".join(token for token, _ in group))
                for role, group in itertools.groupby(pairs, key=lambda p: p[1])]

    def text(self, role: Role | None = None) -> str:
        return "".join(token for token, r in zip(self.tokens, self.roles, strict=True) if role is None or r is role)
