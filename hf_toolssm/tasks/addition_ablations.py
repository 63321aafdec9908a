"""The regime ablations of addition (paper App. D.7): the same problems as ``addition``, other traces.

Theorem 2.1 says that without interaction a fixed-memory model cannot length-generalize; these four
variants are the paper's evidence, each a subclass of ``AdditionTask`` with the same prompt ``a+b=``
and the same sampling:

- ``addition_no_cot``: no tools, no thoughts: ``[ANS]``, then the sum's digits, ``[EOS]``.
- ``addition_reversed_no_cot``: the same with the sum written least significant digit first (the order
  the carries flow in); the answer is checked in that order.
- ``addition_cot_no_tool``: the pointer trace's chain of thought with no tool behind it: every command
  and every would-be observation is a token the model generates itself (role thought), so nothing but
  the prompt is masked. Two things change, because a model cannot generate an observation-only token
  and because without a tool there is nothing to read back: the ``[ERR]`` of a refused move is written
  ``!``, and the readout is replaced by ``[ANS]`` and the sum (its "reads" would be the model recalling
  its own thoughts, and its output stream would hold the commands and every digit twice).
- ``addition_calculator``: one calculator call, then the answer copied from the observation:
  ``[calc]add(a,b)[/cmd][OBS]sum[/OBS][ANS]sum[EOS]``.
"""

from __future__ import annotations

from ..tools.base import ANS, ARG_END, ERR, OBS_CLOSE, OBS_OPEN, ToolEnvironment
from ..tools.calculator import CALC, Calculator
from .addition import AdditionTask, addition_prompt, addition_trace
from .base import Trace
from .trace import TraceWriter

#: how the no-tool chain of thought spells the refused move's [ERR], which only a tool may emit
NO_TOOL_ERR = "!"


class AdditionNoCoTTask(AdditionTask):
    name = "addition_no_cot"

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[])

    def trace(self, a: str, b: str, total: str) -> Trace:
        writer = TraceWriter(addition_prompt(a, b))
        writer.begin_answer()
        writer.write_text(self.expected_answer(total))
        return writer.finish()


class AdditionReversedNoCoTTask(AdditionNoCoTTask):
    name = "addition_reversed_no_cot"

    def expected_answer(self, total: str) -> str:
        return total[::-1]


class AdditionCoTNoToolTask(AdditionTask):
    name = "addition_cot_no_tool"

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[])

    def trace(self, a: str, b: str, total: str) -> Trace:
        with_tool = addition_trace(a, b)
        thoughts = with_tool.tokens[: with_tool.tokens.index(ANS)]
        writer = TraceWriter(addition_prompt(a, b))
        writer.write(*(NO_TOOL_ERR if token == ERR else token for token in thoughts))
        writer.begin_answer()
        writer.write_text(total)
        return writer.finish()


class AdditionCalculatorTask(AdditionTask):
    name = "addition_calculator"

    def make_environment(self) -> ToolEnvironment:
        calculator = Calculator()
        # The call holds both operands and the observation the whole sum: the environment's default limits
        # (256 argument tokens, 4,096 observation tokens) would refuse the call from ~125-digit operands on.
        return ToolEnvironment(
            tools=[calculator],
            max_argument_tokens=2 * calculator.max_digits + len("add(,)"),
            max_observation_tokens=calculator.max_digits + 3,  # [OBS], up to max_digits + 1 digits, [/OBS]
        )

    def trace(self, a: str, b: str, total: str) -> Trace:
        writer = TraceWriter(addition_prompt(a, b))
        writer.command(CALC, *f"add({a},{b})", ARG_END)
        writer.observe(OBS_OPEN, *total, OBS_CLOSE)
        writer.begin_answer()
        writer.write_text(total)
        return writer.finish()
