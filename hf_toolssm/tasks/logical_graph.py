"""Logical Graph: evaluate a random Boolean circuit by depth-first search with a search tool (paper §3.5).

A graph of ``size`` nodes: ``k`` (default 3) inputs with random values, then gates added one at a time,
each ``and``/``or`` of two distinct earlier nodes or the identity of one, every operand negated with
probability 1/2. The last gate added is the output. The prompt is the graph as Python, one assignment
per line, inputs first, in the order the nodes were added, every line ending in ``\\n``::

    v12 = True
    v87 = False
    v5 = True
    v630 = v12 and not v87
    v41 = not v630

Labels are distinct and random: ``v0``..``v999`` for graphs of up to 1,000 nodes; a larger graph draws
from ``v0``..``v9999`` (the next power of ten that holds it), and so on. Training: ``size ~ U{k+1..10}``;
test: exactly ``size`` nodes. (``size`` counts the inputs: 1,000 nodes is 3 inputs and 997 gates.)

The tool is ``[find]`` (a grep over memory lines). The trace is the paper's DFS with memoisation, and
the model's thoughts are lines of the same Python-like form, so later searches find them:

* **visit** ``X``: ``[find]X =[/cmd]`` returns ``X``'s definition and every line the model has written
  about it since, in memory order; the last line is ``X``'s current expression.
* the first variable ``Y`` of that expression: ``[find]Y =[/cmd]``. If ``Y``'s last line is a value
  (an input, or a gate already evaluated), write ``X``'s expression with ``Y`` replaced by it, e.g.
  ``v630 = True and not v87``; when no variable is left, write the value instead: ``v630 = True``.
  Values are not short-circuited: every operand is looked up.
* otherwise descend: write the link ``# Y for X`` and continue with ``Y`` (its definition is in the
  observation just read).
* when ``X`` has a value, return: ``[find]# X for[/cmd]`` names the node that needed it, which is
  visited again (its first variable is now ``X``, found with its value). No link: ``X`` is the output,
  so ``[ANS]`` and its value, ``True`` or ``False``, end the trace.

**``print_output=True``** ends the prompt with ``print(OUTPUT)`` and opens the trace with the fixed
command ``[find]print([/cmd]``, so the output's label is copied from that observation rather than from
the prompt's last line. The default layout's first command copies the label straight after the prompt,
and a model trained on 10-node prompts miscopies it after a 50-node one (``eval/results/README.md``);
every later label the trace copies is read from a recent observation.

**``reread_gate=True``** looks the gate up again (``[find]X =[/cmd]``) after each operand lookup that
returns a value, so the line the model rewrites (``v434 = not v851``, into ``v434 = False``) is in the
observation just read and only the operand's value (``v851 = True``) is one observation back. Without it
that line was read before the operand's lookup, and the print_output Mamba's remaining mistakes fall on
that rewrite (``eval/results/logical_graph/mistake_positions*.json``). It makes traces longer.

A query ``X =`` or ``# X for`` matches exactly the lines meant: a label is ``v`` and digits, so ``v12 =``
never occurs inside ``v112 = ...`` or ``v5 = v12 and ...``. Every thought line ends with ``\\n`` before
the next search, so a half-written line is never searched.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..tools.base import ARG_END, OBS_CLOSE, OBS_OPEN, ToolEnvironment
from ..tools.search_memory import FIND, SearchMemory
from .base import Instance, Task, Trace, check_option
from .trace import TraceWriter

#: labels ``v0..v999`` while they suffice, as in the paper's figures
BASE_LABEL_POOL = 1000
OPERATORS = ("and", "or")


@dataclass(frozen=True)
class Operand:
    name: str
    negated: bool

    def text(self, value: bool | None = None) -> str:
        """``not v12``, or with the operand's value substituted, ``not True``."""
        return ("not " if self.negated else "") + (self.name if value is None else str(value))


@dataclass(frozen=True)
class Gate:
    name: str
    operands: tuple[Operand, ...]
    operator: str  # "and" or "or"; "" for the identity of one operand

    def expression(self, values: dict[str, bool] | None = None) -> str:
        """The right-hand side, with the operands in ``values`` replaced by their values."""
        values = values or {}
        return f" {self.operator} ".join(operand.text(values.get(operand.name)) for operand in self.operands)

    def evaluate(self, values: dict[str, bool]) -> bool:
        results = [values[operand.name] != operand.negated for operand in self.operands]
        return any(results) if self.operator == "or" else all(results)


@dataclass(frozen=True)
class LogicalGraph:
    inputs: dict[str, bool]
    gates: tuple[Gate, ...]

    @property
    def output(self) -> str:
        return self.gates[-1].name

    def lines(self) -> list[str]:
        return [f"{name} = {value}" for name, value in self.inputs.items()] + [
            f"{gate.name} = {gate.expression()}" for gate in self.gates
        ]

    def values(self) -> dict[str, bool]:
        """Every node's value, in the order the nodes were added."""
        values = dict(self.inputs)
        for gate in self.gates:
            values[gate.name] = gate.evaluate(values)
        return values


def label_pool_size(num_nodes: int) -> int:
    """1,000 labels while they suffice, else the next power of ten."""
    pool = BASE_LABEL_POOL
    while pool < num_nodes:
        pool *= 10
    return pool


def random_graph(rng: random.Random, num_nodes: int, num_inputs: int) -> LogicalGraph:
    labels = [f"v{index}" for index in rng.sample(range(label_pool_size(num_nodes)), num_nodes)]
    inputs = {label: rng.random() < 0.5 for label in labels[:num_inputs]}
    gates = []
    for position in range(num_inputs, num_nodes):
        # min: with k = 1 the first gate has a single earlier node to choose from (its identity, negated or not)
        chosen = rng.sample(labels[:position], min(position, rng.choice((1, 2))))
        operator = rng.choice(OPERATORS) if len(chosen) == 2 else ""
        gates.append(
            Gate(labels[position], tuple(Operand(name, rng.random() < 0.5) for name in chosen), operator)
        )
    return LogicalGraph(inputs, tuple(gates))


def graph_prompt(graph: LogicalGraph, print_output: bool = False) -> list[str]:
    lines = graph.lines() + ([f"print({graph.output})"] if print_output else [])
    return [*"".join(f"{line}\n" for line in lines)]


def graph_trace(graph: LogicalGraph, print_output: bool = False, reread_gate: bool = False) -> Trace:
    """The reference DFS trace for ``graph`` (``print_output``: the prompt ends with ``print(OUTPUT)``;
    ``reread_gate``: the gate's line is looked up again after each operand lookup that returns a value)."""
    trace = TraceWriter(graph_prompt(graph, print_output))
    gates = {gate.name: gate for gate in graph.gates}
    known: dict[str, bool] = dict(graph.inputs)  # nodes whose value is in memory
    # what "X =" finds
    lines = {name: [line] for name, line in zip([*graph.inputs, *gates], graph.lines(), strict=True)}
    substituted: dict[str, dict[str, bool]] = {name: {} for name in gates}  # operand values written so far
    links: dict[str, str] = {}  # child -> its link line "# child for parent"
    parents: dict[str, str] = {}

    def find(query: str, matches: list[str]) -> None:
        trace.command(FIND, *query, ARG_END)
        trace.observe(OBS_OPEN, *"\n".join(matches), OBS_CLOSE)

    def think(line: str) -> None:
        trace.write_text(line + "\n")

    current = graph.output
    if print_output:  # a fixed first command; the label is then copied from its observation
        find("print(", [f"print({current})"])
    find(f"{current} =", lines[current])
    while True:
        if current in known:  # evaluated: return to the node that needed it
            parent = parents.get(current)
            find(f"# {current} for", [links[current]] if parent else [])
            if parent is None:
                trace.begin_answer()
                trace.write_text(str(known[current]))
                return trace.finish()
            current = parent
            find(f"{current} =", lines[current])
            continue
        gate = gates[current]
        variable = next(o.name for o in gate.operands if o.name not in substituted[current])
        find(f"{variable} =", lines[variable])
        if variable in known:  # substitute its value, or evaluate once every operand has one
            if reread_gate:  # the line to rewrite in the last observation, the operand's value one before
                find(f"{current} =", lines[current])
            substituted[current][variable] = known[variable]
            if len(substituted[current]) == len(gate.operands):
                known[current] = gate.evaluate(substituted[current])
                line = f"{current} = {known[current]}"
            else:
                line = f"{current} = {gate.expression(substituted[current])}"
            think(line)
            lines[current].append(line)
        else:  # descend, leaving a link to come back by
            links[variable] = f"# {variable} for {current}"
            parents[variable] = current
            think(links[variable])
            current = variable


class LogicalGraphTask(Task):
    name = "logical_graph"
    size_unit = "nodes (inputs included)"
    default_train_max_size = 10

    def __init__(self, k: int = 3, print_output: bool = False, reread_gate: bool = False):
        self.k = check_option(self.name, "k", k, 1, 100, "the number of input nodes")
        for option, value in (("print_output", print_output), ("reread_gate", reread_gate)):
            if not isinstance(value, bool):
                raise ValueError(f"{self.name}: {option} must be true or false, got {value!r}")
        self.print_output = print_output
        self.reread_gate = reread_gate
        self.min_size = k + 1  # at least one gate: the output
        self.default_train_max_size = max(type(self).default_train_max_size, self.min_size)  # k >= 10 needs more

    def make_environment(self) -> ToolEnvironment:
        return ToolEnvironment(tools=[SearchMemory()])

    def _sample(self, rng: random.Random, size: int) -> Instance:
        return self.instance(random_graph(rng, size, self.k))

    def _sample_train(self, rng: random.Random, max_size: int) -> Instance:
        return self._sample(rng, rng.randint(self.min_size, max_size))

    def instance(self, graph: LogicalGraph) -> Instance:
        return Instance(
            task=self.name,
            size=len(graph.inputs) + len(graph.gates),
            prompt=graph_prompt(graph, self.print_output),
            trace=graph_trace(graph, self.print_output, self.reread_gate),
            answer=str(graph.values()[graph.output]),
            environment=self.make_environment,
            metadata={"output": graph.output},
        )

    def instance_from_text(self, text: str) -> Instance:
        """Python-like lines as in the prompt: the inputs ``vN = True|False`` first, then the gates
        ``vN = [not ]vM[ and|or [not ]vK]`` over labels defined above (two distinct ones), the last line
        the output; ValueError names the first bad line."""
        return self.instance(parse_graph(text, self.name, self.print_output))


def parse_graph(text: str, task: str = LogicalGraphTask.name, print_output: bool = False) -> LogicalGraph:
    """The graph a person typed (see :meth:`LogicalGraphTask.instance_from_text`); with ``print_output``
    a last line ``print(OUTPUT)`` naming the last gate may follow (and is implied if missing)."""
    inputs: dict[str, bool] = {}
    gates: list[Gate] = []
    operand = r"(not )?(v\d+)"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if print_output and lines and (printed := re.fullmatch(r"print\((v\d+)\)", lines[-1])):
        lines.pop()
        if not lines or not lines[-1].startswith(f"{printed.group(1)} ="):
            raise ValueError(f"{task}: print({printed.group(1)}) must name the last gate, the output")
    defined: set[str] = set()  # every label so far
    for line in lines:
        constant = re.fullmatch(r"(v\d+) = (True|False)", line)
        match = re.fullmatch(rf"(v\d+) = {operand}(?: (and|or) {operand})?", line)
        if constant and not gates and constant.group(1) not in defined:  # inputs come first
            inputs[constant.group(1)] = constant.group(2) == "True"
            defined.add(constant.group(1))
            continue
        pairs = (match.group(2, 3), match.group(5, 6)) if match else ()  # (negation, label) per operand
        operands = [Operand(label, bool(negated)) for negated, label in pairs if label]
        labels = [operand.name for operand in operands]
        distinct_known = set(labels) <= defined and len(set(labels)) == len(labels)
        if match is None or match.group(1) in defined or not distinct_known:
            raise ValueError(
                f"{task}: bad line {line!r}; expected the inputs 'vN = True' first, then gates like "
                "'vN = vM and not vK' (two distinct operands at most), each label defined once, operands "
                "defined above"
            )
        gates.append(Gate(match.group(1), tuple(operands), match.group(4) or ""))
        defined.add(match.group(1))
    if not gates:
        raise ValueError(f"{task}: the last line must be a gate (the output), got {text!r}")
    return LogicalGraph(inputs, tuple(gates))
