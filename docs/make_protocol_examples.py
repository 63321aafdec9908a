"""Generate the worked examples of docs/protocol.md by running the real tools, so the doc cannot drift.

    python docs/make_protocol_examples.py           # print every example
    python docs/make_protocol_examples.py --write   # rewrite the example blocks inside docs/protocol.md

Each example lives in docs/protocol.md between ``<!-- example: NAME -->`` and ``<!-- /example -->``;
``tests/test_tools.py`` fails when a block differs from what this script renders.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hf_toolssm.tools import ANS, ARG_END, EOS, build_environment, protocol_tokens

DOC = Path(__file__).with_name("protocol.md")

# name -> (tools, environment limits, prompt, what the model generates); all written as text and split
# into protocol tokens and single characters, exactly as the tokenizer would split them.
EXAMPLES = {
    "addition": (
        {"pointer": {"num_pointers": 2}},
        {},
        "7+5=",
        "[pointer1.read()]"
        "[pointer2.move_right()][pointer2.move_right()][pointer2.read()]"
        "21[ANS]"
        "[pointer2.move_right()][pointer2.move_right()][pointer2.move_right()][pointer2.read()]1"
        "[pointer2.move_left()][pointer2.read()]2[EOS]",
    ),
    "pointer_boundaries": (
        {"pointer": {"num_pointers": 1}},
        {},
        "ab",
        "[pointer1.move_left()][pointer1.move_right()][pointer1.move_right()][pointer1.read()]"
        "[pointer1.move_right()]c[pointer1.read()][pointer1.move_right()][pointer1.read()]",
    ),
    "find": (
        {"search": {"max_lines": 2}},
        {},
        "v1=True\nv2=not v1\nv3=v1 and v2\n",
        "[find]v2=[/cmd]v1=True\n[find]v1[/cmd][find]v9[/cmd][find][/cmd]",
    ),
    "calculator": (
        {"calculator": None},
        {},
        "123+4567=",
        "[calc]add(123,4567)[/cmd][calc]sub(5,12)[/cmd][calc]pow(2,8)[/cmd][ANS]4690[EOS]",
    ),
    "code_sandbox": (
        {
            "code": {
                "files": {
                    "main.py": "from foo import foo\ndef main():\n    v10 = 7\n    foo()\nmain()\n",
                    "foo.py": "def foo():\n    print(v10)\n",
                }
            }
        },
        {},
        "fix: pass v10 from main to foo\n",
        "[code]ls[/cmd][code]run[/cmd][code]open foo.py:2[/cmd][code]edit 1 def foo(v10):[/cmd]"
        "[code]run[/cmd][code]replace main.py 4     foo(v10)[/cmd][code]run[/cmd][code]cat ../foo.py[/cmd]"
        "[ANS]exit 0 hash 10159baf[EOS]",
    ),
    "environment_errors": (
        {"pointer": {"num_pointers": 1}, "search": None},
        {"max_argument_tokens": 4, "max_tool_calls": 5},
        "xy",
        "[EOM][/cmd][find]xyxyx[pointer1.read()][pointer1.read()][pointer1.read()]",
    ),
}

_TOKEN = re.compile(
    "|".join(re.escape(token) for token in sorted(protocol_tokens(), key=len, reverse=True)) + "|.", re.DOTALL
)


def split_tokens(text: str) -> list[str]:
    """Protocol tokens as one token each, every other character on its own."""
    return _TOKEN.findall(text)


def _show(tokens: list[str]) -> str:
    return "".join("\\n" if token == "\n" else token for token in tokens)


def render(tools: dict, limits: dict, prompt: str, generated: str) -> str:
    """Run the model's tokens through a real environment; one row per command or run of text."""
    environment = build_environment(tools, **limits)
    argument_commands = set().union(*(tool.argument_commands() for tool in environment.tools))
    environment.reset(split_tokens(prompt))
    rows: list[tuple[list[str], str, list[str]]] = []  # (generated tokens, role, injected tokens)
    in_argument = extends_text = False
    for token in split_tokens(generated):
        observation = environment.step(token)
        role = environment.roles[len(environment.roles) - len(observation) - 1].value
        is_text = role in ("thought", "output") and token not in (ANS, EOS)
        if in_argument or (is_text and extends_text and rows[-1][1] == role):
            rows[-1][0].append(token)  # an argument, or more of the same run of text: same row
            rows[-1][2].extend(observation)
        else:
            rows.append(([token], role, list(observation)))
        opens_argument = token in argument_commands and not in_argument
        in_argument = (in_argument or opens_argument) and token not in (ARG_END, EOS) and not observation
        extends_text = is_text
        if environment.stop_reason is not None:
            break
    width = max(len(_show(row[0])) for row in rows) + 2
    lines = [f"{'model generates':<{width}}{'role':<13}environment injects"]
    lines += [f"{_show(gen):<{width}}{role:<13}{_show(injected)}".rstrip() for gen, role, injected in rows]
    lines += [
        "",
        f"memory:      {_show(environment.memory.tokens)}",
        f"answer:      {environment.answer()!r}",
        f"tool calls:  {environment.num_tool_calls}",
        f"stop_reason: {environment.stop_reason.value if environment.stop_reason else None}",
    ]
    return "\n".join(lines)


def examples() -> dict[str, str]:
    return {name: render(*example) for name, example in EXAMPLES.items()}


# One example block; its text may be empty (a fresh placeholder) but never runs into the next block.
_BLOCK = re.compile(
    r"(<!-- example: (\w+) -->\n```text\n)((?:(?!<!--).)*?)\n?(```\n<!-- /example -->)", re.DOTALL
)


def update(doc: str) -> str:
    """The doc with every example block replaced by its freshly rendered text."""
    rendered = examples()
    return _BLOCK.sub(lambda block: f"{block.group(1)}{rendered[block.group(2)]}\n{block.group(4)}", doc)


def blocks(doc: str) -> dict[str, str]:
    """The example blocks as they stand in the doc."""
    return {match.group(2): match.group(3) for match in _BLOCK.finditer(doc)}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(update(DOC.read_text()))
    else:
        for name, text in examples().items():
            print(f"<!-- example: {name} -->\n```text\n{text}\n```\n<!-- /example -->\n")
