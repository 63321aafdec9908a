"""Generate docs/tasks.md from the code: every task's format (its module docstring), a worked example
replayed through the real tools with the trace split into roles, and trace lengths. The doc cannot drift:
``tests/test_tasks.py`` fails when docs/tasks.md differs from what this script renders.

    python docs/make_tasks_doc.py           # print the doc
    python docs/make_tasks_doc.py --write   # rewrite docs/tasks.md
"""

from __future__ import annotations

import inspect
import random
import re
import sys
from pathlib import Path
from statistics import mean

from hf_toolssm.tasks import arithmetic, get_task, pointers, replay
from hf_toolssm.tools import EOS, Role

DOC = Path(__file__).with_name("tasks.md")
WIDTH = 104

# One section per task module (its docstring), then each task's facts and worked example.
SECTIONS = [
    ("Addition", [("addition", {}, lambda task: task.instance("957", "68"))]),
    ("Multiplication", [("multiplication", {"k": 2}, lambda task: task.instance("47", "12"))]),
    ("Mixture", [("mixture", {"weight": 0.5}, None)]),
    (
        "Tower of Hanoi",
        [
            ("hanoi_iterative", {}, lambda task: task.instance([5, 2])),
            ("hanoi_recursive", {}, lambda task: task.instance([5, 2])),
        ],
    ),
    ("Logical Graph", [("logical_graph", {}, lambda task: task.sample(random.Random(3), 6))]),
    (
        "Addition ablations",
        [
            ("addition_no_cot", {}, lambda task: task.instance("57", "8")),
            ("addition_reversed_no_cot", {}, lambda task: task.instance("57", "8")),
            ("addition_cot_no_tool", {}, lambda task: task.instance("57", "8")),
            ("addition_calculator", {}, lambda task: task.instance("57", "8")),
        ],
    ),
    (
        "Coding",
        [
            ("coding_single_turn", {}, lambda task: task.instance(4, 7)),
            ("coding_interactive", {}, lambda task: task.instance(4, 7)),
        ],
    ),
]

# (task, options, largest test size, instances averaged there)
LENGTHS = [
    ("addition", {}, 1000, 1),
    ("multiplication", {"k": 1}, 1000, 1),
    ("multiplication", {"k": 2}, 1000, 1),
    ("hanoi_iterative", {}, 12, 1),
    ("hanoi_recursive", {}, 12, 1),
    ("logical_graph", {}, 1000, 20),
    ("addition_cot_no_tool", {}, 1000, 1),
    ("coding_single_turn", {}, 30, 20),
    ("coding_interactive", {}, 30, 20),
]


def markdown(docstring: str) -> str:
    """A module docstring as markdown: Sphinx roles become code, ``::`` introduces an indented block."""
    text = inspect.cleandoc(docstring)
    text = re.sub(r":(?:func|class|mod|meth|attr):`~?([\w.]+)`", r"``\1``", text)
    return text.replace("::\n", ":\n")


def show(token: str) -> str:
    return "\\n" if token == "\n" else token


def render_trace(instance) -> str:
    """The trace with each observation in «», wrapped between tokens; a thought's newline ends a line."""
    lines, line = [], ""
    for segment in instance.segments():
        if segment.role is Role.OBSERVATION:
            pieces = ["«" + "".join(map(show, segment.tokens)) + "»"]
        else:  # protocol tokens one by one, runs of characters whole, a newline ending its run
            pieces, extends = [], False
            for token in segment.tokens:
                if extends and len(token) == 1:
                    pieces[-1] += show(token)
                else:
                    pieces.append(show(token))
                extends = len(token) == 1 and token != "\n"
                if token == "\n":
                    pieces[-1] += "\n"
        for piece in pieces:
            if line and len(line) + len(piece.rstrip("\n")) > WIDTH:
                lines.append(line)
                line = ""
            line += piece
            if piece.endswith("\n"):
                lines.append(line[:-1])
                line = ""
    return "\n".join([*lines, line] if line else lines)


def role_counts(instance) -> str:
    roles = instance.roles()
    counts = [f"{role.value} {roles.count(role)}" for role in Role if roles.count(role)]
    return f"{len(roles)} tokens: " + ", ".join(counts)


def example_section(name: str, options: dict, build) -> list[str]:
    task = get_task(name, **options)
    instance = build(task)
    result = replay(instance)
    assert result.correct, name
    stored = (Role.PROMPT, Role.THOUGHT, Role.OUTPUT)  # what the tools see; [EOS] is never stored
    memory = [t for t, r in zip(instance.full_tokens(), instance.roles(), strict=True) if r in stored and t != EOS]
    return [
        f"Example ({task.size_unit}: {instance.size}). Prompt:",
        "",
        "```text",
        "".join(instance.prompt).rstrip("\n"),
        "```",
        "",
        "Trace (observations in «»):",
        "",
        "```text",
        render_trace(instance),
        "```",
        "",
        f"Memory at the end: `{''.join(map(show, memory))}`  ",
        f"Answer: `{show_answer(instance.answer)}`  ",
        f"{role_counts(instance)}; tool calls: {result.num_tool_calls}.",
        "",
    ]


def show_answer(answer: str) -> str:
    return answer.replace("\n", "\\n")


def task_facts(name: str, options: dict) -> str:
    task = get_task(name, **options)
    tools = ", ".join(repr(tool) for tool in task.make_environment().tools) or "none"
    bound = f"{task.min_size}..{task.max_size}" if task.max_size else f">= {task.min_size}"
    return (
        f"`get_task({name!r}{''.join(f', {k}={v!r}' for k, v in options.items())})`: size = {task.size_unit} "
        f"({bound}); training sizes up to {task.default_train_max_size}; tools: {tools}."
    )


def lengths_table() -> list[str]:
    rows = [
        "| task | training distribution (mean) | largest training size | largest test size |",
        "|---|---|---|---|",
    ]
    for name, options, test_size, repeats in LENGTHS:
        task = get_task(name, **options)
        rng = random.Random(f"lengths:{name}")
        train = mean(len(task.sample_train(rng)) for _ in range(200 if not name.startswith("hanoi") else 20))
        largest_train = mean(len(task.sample(rng, task.default_train_max_size)) for _ in range(5))
        test = mean(len(task.sample(rng, test_size)) for _ in range(repeats))
        label = name + "".join(f", {k}={v}" for k, v in options.items())
        rows.append(
            f"| {label} | {train:,.0f} | {largest_train:,.0f} at {task.default_train_max_size} "
            f"| {test:,.0f} at {test_size} |"
        )
    return rows


def render() -> str:
    out = [
        "# Tasks",
        "",
        "<!-- Generated by docs/make_tasks_doc.py from the code: edit the docstrings, then run",
        "     `python docs/make_tasks_doc.py --write` (tests/test_tasks.py fails on a stale file). -->",
        "",
        "Every task samples problems from a seeded `random.Random` and writes the reference trace a",
        "hard-coded agent produces for it (`hf_toolssm/tasks/`). Tokens are single characters or protocol",
        "tokens (`docs/protocol.md`). In the examples below, commands and thoughts/outputs are as generated,",
        "observations (injected by the tools, masked from the loss) are in «», `\\n` is a newline token.",
        "Every example is replayed through the real tools when this page is generated.",
        "",
        "## Trace lengths",
        "",
        "Tokens per instance, prompt included (the sequence a model is trained on or decodes):",
        "",
        *lengths_table(),
        "",
        "Means over 200 training samples (Hanoi: 20), 5 at the largest training size, 20 graphs at 1,000",
        "nodes, 20 codebases at 30 functions, one instance otherwise. A 1,000-digit addition trace is 26",
        "tokens per digit; the iterative Hanoi trace spends ~4 tokens per character of the state it copies",
        "at each of its 2^n - 1 moves. The coding traces (character tokens) are the paper's evaluation range:",
        "it trains on 4..16 functions in an 8,192-token context and evaluates up to ~30.",
        "",
        "## Shared by the pointer tasks",
        "",
        markdown(pointers.__doc__),
        "",
        "### Arithmetic",
        "",
        markdown(arithmetic.__doc__),
        "",
    ]
    for title, tasks in SECTIONS:
        module = sys.modules[type(get_task(tasks[0][0], **tasks[0][1])).__module__]
        out += [f"## {title}", "", markdown(module.__doc__), ""]
        for name, options, build in tasks:
            out += [f"### `{name}`", "", task_facts(name, options), ""]
            if build is not None:
                out += example_section(name, options, build)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(text)
    else:
        sys.stdout.write(text)
