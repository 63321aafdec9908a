"""The coding task: thread ``v10`` from ``main`` down to ``foo`` in a generated codebase (paper §3.6, Fig. 1).

**The codebase** has ``size`` Python functions, one per file, grown one node at a time: ``main`` first,
then each new function becomes the child of 1 or 2 (equally likely) distinct earlier functions, which
import and call it. Names are random draws from ``f0``..``f999``, except the last function added, ``foo``
(a leaf). Each function takes 0-2 of the variables ``v0``..``v9`` as parameters, declares (``vK = digit``)
the ones its children need and it does not receive (half the time one more of its own), calls its children
in the order they were added, passing each exactly the variables it takes, by name, and prints one
variable. ``main`` also declares ``v10``, and ``foo`` prints it, but nothing passes it down: running
``main.py`` raises ``NameError``. A file, say ``f12.py`` with children ``f7`` and ``foo``::

    from f7 import f7
    from foo import foo
    def f12(v3, v5):
        v8 = 4
        f7(v3, v8)
        print(v5)
        foo(v5)

``main.py`` has no parameters and ends with a ``main()`` line. **The reference fix** threads ``v10``
through every path from ``main`` to ``foo``: every function on such a path (``foo`` included, ``main``
excluded) gets the last parameter ``v10``, and every call from a function on a path to one on a path
gets the last argument ``v10``. Nothing else changes, so the fixed program prints what it printed
before plus ``foo``'s ``v10`` lines. Sampling never runs Python: :meth:`Codebase.execute` predicts the
output and the traceback of any partially fixed codebase exactly (``tests/test_coding_task.py`` checks
it against real runs).

**The prompt** names the repository and the task, e.g. ``repo 12-3829103\\nfix: pass v10 from main to
foo\\n``: the codebase is a pure function of ``12-3829103`` (size and seed), and the tool checks it out
from the prompt's first line (``CodeSandbox(checkout=checkout_codebase)``), so one environment factory
serves every instance in training, replay, generation and evaluation alike.

**The tool** is :class:`~hf_toolssm.tools.code_sandbox.CodeSandbox` (``[code]`` with ``ls``, ``cat``,
``replace``, ``open``, ``edit``, ``run``; ``docs/protocol.md`` §5, ``docs/sandbox.md``). **The answer** is
the status line of the agent's last ``run``, e.g. ``exit 0 hash 5f3a9c2e``: the hash covers everything the
program printed, so it matches only when the codebase exits cleanly with exactly the output of the
reference fix (a status line cannot be written without running the fixed code, while copying a hundred
lines of output would test copying rather than fixing). ``check`` compares strings. **The pass rate**,
the paper's measure, asks instead whether the code is fixed: ``check_final_state`` runs the sandbox's
files as the decode left them (``CodingTask.check_files``) and compares the output with the reference
fix's, so a model that fixes the code but miscopies the hash passes, and one that writes the right status
line without fixing the code does not.

**The agents** (hard-coded, as in the paper; no thoughts, only commands and the answer):

* ``coding_single_turn`` prints every file at once (``cat *``), then emits every edit of the reference
  fix, file by file in ``cat *`` order and line by line (one ``replace`` per changed line), then runs
  once to get the status line it answers with. Deciding which functions are on a path to ``foo`` needs
  the whole codebase at once.
* ``coding_interactive`` runs the code and reads the traceback. Its innermost frame, printed last, is
  where ``v10`` is missing: a ``NameError`` in ``foo``, which must take it as a parameter, or a
  ``TypeError`` (``f12() missing 1 required positional argument: 'v10'``) at a call that must pass it, in
  a function that must then take it too unless it has it already or is ``main``. It opens that frame as
  printed (``open f12.py:7``: the file, with the frame's line marked) and edits those lines (``edit``,
  line order). By default (``files_per_round=1``) it runs again at once: the function that got the new
  parameter makes its caller fail next, so every round's file and line are the last frame of the run
  just printed, the lines to change are the marked one and the ``def`` line of the file just shown, and
  no command writes a name or number read further back. With ``files_per_round=k`` it follows the
  traceback outwards through up to ``k`` files per run (the paper's agent fixes up to 3), opening the
  next frame out each time. Either way it ends with the same codebase as the reference fix.

The paper's third source, distilling SWE-agent-LM-32B inside mini-SWE-agent, needs a 32B model this
project does not download: ``hf_toolssm.tasks.coding_distillation`` turns such trajectories into
role-tagged segments, for when they exist. Training: ``size ~ U{4..16}`` (the paper's 4..16 functions).
"""

from __future__ import annotations

import random
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from ..tools.base import ARG_END, OBS_CLOSE, OBS_OPEN, Tool, ToolEnvironment
from ..tools.code_sandbox import CODE, CodeSandbox, cat_text, numbered, run_files, run_observation_text
from .base import Instance, Task, Trace, check_option
from .trace import TraceWriter

VARIABLES = tuple(f"v{index}" for index in range(10))
#: the variable main declares and foo uses
BUG = "v10"
#: function names are drawn from f0..f(NAME_POOL - 1)
NAME_POOL = 1000
TRAIN_MIN_SIZE = 4
TASK_LINE = f"fix: pass {BUG} from main to foo"
_REPOSITORY = re.compile(r"repo (\d{1,4})-(\d{1,12})")


@dataclass(frozen=True)
class Statement:
    """One line of a function body: ``set`` (``name = value``), ``print`` (``print(name)``) or ``call``
    (``name(...)``, ``name`` being the callee, which takes its own parameters as arguments)."""

    kind: str
    name: str
    value: int = 0


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[str, ...]
    children: tuple[str, ...]  # imported and called in this order
    body: tuple[Statement, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.py"

    @property
    def def_line(self) -> int:
        return len(self.children) + 1

    def line_of(self, index: int) -> int:
        """The line number of ``body[index]``."""
        return len(self.children) + 2 + index

    def statement_at(self, line: int) -> Statement | None:
        index = line - len(self.children) - 2
        return self.body[index] if 0 <= index < len(self.body) else None


@dataclass(frozen=True)
class Fix:
    """A state of the fix: the functions that take ``v10`` and the (caller, callee) calls that pass it."""

    params: frozenset[str] = frozenset()
    arguments: frozenset[tuple[str, str]] = frozenset()

    def __or__(self, other: Fix) -> Fix:
        return Fix(self.params | other.params, self.arguments | other.arguments)


@dataclass(frozen=True)
class Execution:
    """What running ``main.py`` does: the output (prints, then the traceback if it fails) and where it
    failed (``frames``: (file, line), outermost first; ``error``: the exception line)."""

    output: str
    frames: tuple[tuple[str, int], ...] = ()
    error: str | None = None

    @property
    def returncode(self) -> int:
        return 0 if self.error is None else 1

    def observation(self, max_output_chars: int) -> str:
        return run_observation_text(self.output.encode(), self.returncode, max_output_chars)


class _Raised(Exception):
    def __init__(self, message: str, frames: list[tuple[str, int]]):
        super().__init__(message)
        self.frames = tuple(frames)


@dataclass(frozen=True)
class Codebase:
    """Functions in the order they were added: ``main`` first, ``foo`` last."""

    functions: tuple[Function, ...]
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {function.name: function for function in self.functions})

    def __getitem__(self, name: str) -> Function:
        return self._index[name]

    def __len__(self) -> int:
        return len(self.functions)

    # --- the text ---------------------------------------------------------------------------------------
    def source(self, function: Function, fix: Fix = Fix()) -> str:
        lines = [f"from {child} import {child}" for child in function.children]
        params = function.params + ((BUG,) if function.name in fix.params else ())
        lines.append(f"def {function.name}({', '.join(params)}):")
        for statement in function.body:
            if statement.kind == "set":
                lines.append(f"    {statement.name} = {statement.value}")
            elif statement.kind == "print":
                lines.append(f"    print({statement.name})")
            else:
                lines.append(
                    f"    {statement.name}({', '.join(self.arguments(function.name, statement.name, fix))})"
                )
        if function.name == "main":
            lines.append("main()")
        return "\n".join(lines) + "\n"

    def files(self, fix: Fix = Fix()) -> dict[str, str]:
        """File name -> text, sorted by name (the order ``ls`` and ``cat *`` show)."""
        return {
            function.file: self.source(function, fix)
            for function in sorted(self.functions, key=lambda f: f.file)
        }

    def arguments(self, caller: str, callee: str, fix: Fix) -> tuple[str, ...]:
        return self[callee].params + ((BUG,) if (caller, callee) in fix.arguments else ())

    # --- the fix ----------------------------------------------------------------------------------------
    @cached_property
    def on_path(self) -> frozenset[str]:
        """The functions on some path from main to foo, foo included."""
        parents: dict[str, list[str]] = {function.name: [] for function in self.functions}
        for function in self.functions:
            for child in function.children:
                parents[child].append(function.name)
        seen, stack = {"foo"}, ["foo"]
        while stack:
            for parent in parents[stack.pop()]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return frozenset(seen)

    def reference_fix(self) -> Fix:
        on_path = self.on_path
        return Fix(
            params=on_path - {"main"},
            arguments=frozenset(
                (function.name, child)
                for function in self.functions
                if function.name in on_path
                for child in function.children
                if child in on_path
            ),
        )

    # --- running it -------------------------------------------------------------------------------------
    def execute(self, fix: Fix = Fix()) -> Execution:
        """Run the codebase under ``fix`` as Python would, with the sandbox runner's traceback format."""
        output: list[str] = []
        main = self["main"]
        frames = [(main.file, main.def_line + len(main.body) + 1)]  # the module's main() line

        def call(function: Function, values: dict[str, int]) -> None:
            frames.append((function.file, 0))
            for index, statement in enumerate(function.body):
                frames[-1] = (function.file, function.line_of(index))
                if statement.kind == "set":
                    values[statement.name] = statement.value
                elif statement.kind == "print":
                    output.append(f"{_value(values, statement.name, frames)}\n")
                else:
                    callee = self[statement.name]
                    passed = [
                        _value(values, name, frames)
                        for name in self.arguments(function.name, callee.name, fix)
                    ]
                    params = callee.params + ((BUG,) if callee.name in fix.params else ())
                    if len(passed) != len(params):
                        raise _Raised(_arity_error(callee.name, params, len(passed)), frames)
                    call(callee, dict(zip(params, passed, strict=True)))
            frames.pop()

        try:
            call(main, {})
        except _Raised as raised:
            trace = "".join(f"  {file}:{line}\n" for file, line in raised.frames)
            error = str(raised)
            return Execution(
                "".join(output) + f"Traceback (most recent call last):\n{trace}{error}\n",
                raised.frames,
                error,
            )
        return Execution("".join(output))


def _value(values: dict[str, int], name: str, frames: list[tuple[str, int]]) -> int:
    if name not in values:
        raise _Raised(f"NameError: name '{name}' is not defined", frames)
    return values[name]


def _arity_error(callee: str, params: tuple[str, ...], passed: int) -> str:
    """Python's message for a call with the wrong number of positional arguments."""
    if passed < len(params):
        missing = [f"'{name}'" for name in params[passed:]]
        names = (
            missing[0]
            if len(missing) == 1
            else ", ".join(missing[:-1]) + (", and " if len(missing) > 2 else " and ") + missing[-1]
        )
        plural = "s" if len(missing) > 1 else ""
        return f"TypeError: {callee}() missing {len(missing)} required positional argument{plural}: {names}"
    takes = f"{len(params)} positional argument{'s' if len(params) != 1 else ''}"
    return f"TypeError: {callee}() takes {takes} but {passed} {'was' if passed == 1 else 'were'} given"


def random_codebase(rng: random.Random, size: int) -> Codebase:
    """The paper's generator: ``size`` functions grown one at a time, ``main`` first, ``foo`` last."""
    names = ["main", *(f"f{index}" for index in rng.sample(range(NAME_POOL), size - 2)), "foo"]
    children: dict[str, list[str]] = {name: [] for name in names}
    for index in range(1, size):
        for parent in sorted(rng.sample(range(index), min(index, rng.choice((1, 2))))):
            children[names[parent]].append(names[index])
    params = {"main": ()} | {
        name: tuple(sorted(rng.sample(VARIABLES, rng.randint(0, 2)), key=lambda v: int(v[1:])))
        for name in names[1:]
    }
    functions = []
    for name in names:
        known = list(params[name])
        declared = []
        for child in children[name]:
            for variable in params[child]:
                if variable not in known:
                    known.append(variable)
                    declared.append(variable)
        free = [variable for variable in VARIABLES if variable not in known]
        # one variable of its own, so that every function can print (unless its children take all ten)
        if free and (not known or rng.random() < 0.5):
            own = rng.choice(free)
            known.append(own)
            declared.append(own)
        sets = [Statement("set", variable, rng.randint(0, 9)) for variable in declared]
        if name == "main":
            sets.insert(rng.randint(0, len(sets)), Statement("set", BUG, rng.randint(0, 9)))
        prints = [Statement("print", rng.choice(known))]
        if name == "foo":
            prints.insert(rng.randint(0, 1), Statement("print", BUG))
        tail = [Statement("call", child) for child in children[name]]
        for statement in prints:
            tail.insert(rng.randint(0, len(tail)), statement)
        functions.append(Function(name, params[name], tuple(children[name]), tuple(sets + tail)))
    return Codebase(tuple(functions))


# --- repositories: a name for every codebase -------------------------------------------------------------
def repository_name(size: int, seed: int) -> str:
    return f"{size}-{seed}"


def codebase_for(size: int, seed: int) -> Codebase:
    """The codebase a repository name stands for (its own random stream, independent of everything else)."""
    return random_codebase(random.Random(f"coding:{size}:{seed}"), size)


def checkout_codebase(first_line: str) -> dict[str, str]:
    """The buggy files of the repository the prompt's first line names (``repo SIZE-SEED``); the
    ``CodeSandbox`` checkout of the coding tasks. ``ValueError`` if the line names none."""
    match = _REPOSITORY.fullmatch(first_line)
    if match is None or not CodingTask.min_size <= int(match.group(1)) <= CodingTask.max_size:
        raise ValueError(f"not a repository line: {first_line[:40]!r}")
    return codebase_for(int(match.group(1)), int(match.group(2))).files()


def coding_prompt(size: int, seed: int) -> list[str]:
    return [*f"repo {repository_name(size, seed)}\n{TASK_LINE}\n"]


# --- the agents ------------------------------------------------------------------------------------------
class _Agent:
    """Writes a trace: ``[code]`` commands and the observations the sandbox will answer."""

    def __init__(self, codebase: Codebase, prompt: list[str], max_output_chars: int):
        self.codebase = codebase
        self.trace = TraceWriter(prompt)
        self.max_output_chars = max_output_chars
        self.fix = Fix()

    def command(self, text: str, observation: str) -> None:
        self.trace.command(CODE, *text, ARG_END)
        self.trace.observe(OBS_OPEN, *observation, OBS_CLOSE)

    def run(self) -> Execution:
        execution = self.codebase.execute(self.fix)
        self.command("run", execution.observation(self.max_output_chars))
        return execution

    def replace(self, names: list[str], fix: Fix) -> None:
        """Apply ``fix`` on top of the current one: one ``replace`` per changed line of ``names``, in order."""
        for name in names:
            for number, new in self.changed_lines(self.codebase[name.removesuffix(".py")], fix):
                self.command(f"replace {name} {number} {new}", "")
        self.fix = self.fix | fix

    def open_and_edit(self, file: str, line: int, fix: Fix) -> None:
        """``open FILE:LINE``, then apply ``fix`` there: one ``edit`` per changed line, in order."""
        function = self.codebase[file.removesuffix(".py")]
        self.command(f"open {file}:{line}", numbered(self.codebase.source(function, self.fix), mark=line))
        for number, new in self.changed_lines(function, fix):
            self.command(f"edit {number} {new}", "")
        self.fix = self.fix | fix

    def changed_lines(self, function: Function, fix: Fix) -> list[tuple[int, str]]:
        """(line number, new text) of the lines of ``function`` that ``fix`` changes on top of ours."""
        before = self.codebase.source(function, self.fix).split("\n")
        after = self.codebase.source(function, self.fix | fix).split("\n")
        return [(number, new) for number, (old, new) in enumerate(zip(before, after, strict=True), 1) if old != new]

    def answer(self, execution: Execution) -> Trace:
        if execution.error is not None:
            raise AssertionError("the agent must end on a passing run")
        self.trace.begin_answer()
        self.trace.write_text(execution.observation(self.max_output_chars).split("\n")[-1])
        return self.trace.finish()


def single_turn_trace(codebase: Codebase, prompt: list[str], max_output_chars: int) -> Trace:
    """``cat *``, every edit of the reference fix, one ``run``, the status line."""
    agent = _Agent(codebase, prompt, max_output_chars)
    agent.command("cat *", cat_text(codebase.files()))
    agent.replace(list(codebase.files()), codebase.reference_fix())
    return agent.answer(agent.run())


def interactive_trace(
    codebase: Codebase, prompt: list[str], max_output_chars: int, files_per_round: int
) -> Trace:
    """Run, open and fix the files the traceback names (up to ``files_per_round``, innermost first), run
    again, until it passes."""
    agent = _Agent(codebase, prompt, max_output_chars)
    for _ in range(4 * len(codebase) + 4):  # every round fixes at least one line: this is never reached
        execution = agent.run()
        if execution.error is None:
            return agent.answer(execution)
        position = len(execution.frames) - 1
        function = codebase[execution.frames[position][0].removesuffix(".py")]
        statement = function.statement_at(execution.frames[position][1])
        if execution.error.startswith("NameError"):  # foo prints v10: it must take it
            fix = Fix(params=frozenset({function.name}))
        elif execution.error.startswith("TypeError") and statement is not None and statement.kind == "call":
            fix = _pass_down(function, statement.name, agent.fix)
        else:
            raise AssertionError(f"unexpected failure: {execution.error}")
        for fixed_files in range(1, files_per_round + 1):
            new_param = function.name in fix.params and function.name not in agent.fix.params
            agent.open_and_edit(*execution.frames[position], fix)
            if not new_param or fixed_files == files_per_round:
                break
            position -= 1  # the caller: its call (the next frame out) does not pass the new parameter yet
            callee, function = function.name, codebase[execution.frames[position][0].removesuffix(".py")]
            fix = _pass_down(function, callee, agent.fix)
    raise AssertionError("the interactive agent did not converge")


def _pass_down(caller: Function, callee: str, current: Fix) -> Fix:
    """``caller`` passes ``v10`` to ``callee``, and takes it as a parameter unless it has it (or is main)."""
    takes = caller.name != "main" and caller.name not in current.params
    return Fix(frozenset({caller.name}) if takes else frozenset(), frozenset({(caller.name, callee)}))


# --- the tasks -------------------------------------------------------------------------------------------
class CodingTask(Task):
    """A codebase to fix with the code sandbox; subclasses pick the agent that writes the trace."""

    size_unit = "functions"
    default_train_max_size = 16
    min_size = 2  # main and foo
    max_size = NAME_POOL + 2
    #: what a ``run`` observation shows of the output (the sandbox's ``max_output_chars``)
    max_output_chars = 4000

    def make_environment(self) -> ToolEnvironment:
        sandbox = CodeSandbox(checkout=checkout_codebase, max_output_chars=self.max_output_chars)
        # cat * at 1,000 functions is ~110k characters; every file line is far below the argument limit
        return ToolEnvironment(tools=[sandbox], max_observation_tokens=1 << 18)

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.instance(size, rng.randrange(10**9))

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        return self._sample(rng, rng.randint(min(TRAIN_MIN_SIZE, max_size), max_size))

    def instance(self, size: int, seed: int) -> Instance:
        """The instance for repository ``size-seed``."""
        self.validate_size(size, "size")
        if not (isinstance(seed, int) and 0 <= seed < 10**12):  # the prompt's repository line holds 1-12 digits
            raise ValueError(f"{self.name}: seed must be a whole number in 0..10^12 - 1, got {seed!r}")
        codebase = codebase_for(size, seed)
        prompt = coding_prompt(size, seed)
        fixed = codebase.execute(codebase.reference_fix())
        return Instance(
            task=self.name,
            size=size,
            prompt=prompt,
            trace=self.trace(codebase, prompt),
            answer=fixed.observation(self.max_output_chars).split("\n")[-1],
            environment=self.make_environment,
            metadata={"repository": repository_name(size, seed), "expected_output": fixed.output},
        )

    @abstractmethod
    def trace(self, codebase: Codebase, prompt: list[str]) -> Trace:
        """The reference trace of this task's agent."""

    def check_files(self, instance: Instance, files: dict[str, str], time_limit: float = 2.0) -> bool:
        """Whether ``files`` (e.g. ``CodeSandbox.files()`` after a decode) run cleanly with exactly the
        output of the reference fix: a real run in a fresh sandbox."""
        result = run_files(files, time_limit=time_limit)
        return result.returncode == 0 and result.output == instance.metadata["expected_output"].encode()

    checks_final_state = True

    def check_final_state(self, instance: Instance, tools: Sequence[Tool]) -> bool:
        """Whether the sandbox's files pass :meth:`check_files` after the decode: the paper's pass rate,
        which asks whether the agent fixed the code, however it wrote its answer."""
        (sandbox,) = (tool for tool in tools if isinstance(tool, CodeSandbox))
        return self.check_files(instance, sandbox.files())

    def instance_from_text(self, text: str) -> Instance:
        """``12-3829103`` or ``repo 12-3829103`` (the whole prompt too, its task line included): the repository to
        fix."""
        return self.instance(*self._repository(text))

    def prompt_from_text(self, text: str) -> list[str]:
        """As :meth:`instance_from_text`, without running the reference fix."""
        return coding_prompt(*self._repository(text))

    def _repository(self, text: str) -> tuple[int, int]:
        match = re.fullmatch(r"(?:repo )?(\d{1,4})-(\d{1,12})(?:\n" + re.escape(TASK_LINE) + ")?", text.strip())
        if match is None or not self.min_size <= int(match.group(1)) <= self.max_size:
            raise ValueError(
                f"{self.name}: expected a repository SIZE-SEED with SIZE in 2..{self.max_size}, got {text!r}"
            )
        return int(match.group(1)), int(match.group(2))


class SingleTurnCodingTask(CodingTask):
    name = "coding_single_turn"

    def trace(self, codebase: Codebase, prompt: list[str]) -> Trace:
        return single_turn_trace(codebase, prompt, self.max_output_chars)


class InteractiveCodingTask(CodingTask):
    name = "coding_interactive"

    def __init__(self, files_per_round: int = 1):
        self.files_per_round = check_option(
            self.name, "files_per_round", files_per_round, 1, 100, "the most files fixed between two runs"
        )

    def trace(self, codebase: Codebase, prompt: list[str]) -> Trace:
        return interactive_trace(codebase, prompt, self.max_output_chars, self.files_per_round)
