"""The tools and the environment: boundaries, errors, limits, roles, memory, and property tests that
drive them with random command/token streams."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_toolssm.tools import (
    ANS,
    ARG_END,
    CALC,
    EOM,
    EOS,
    ERR,
    FIND,
    MAX_POINTERS,
    OBS_CLOSE,
    OBS_OPEN,
    OBSERVATION_ONLY_TOKENS,
    PAD,
    TRUNC,
    Calculator,
    Memory,
    PointerMemory,
    Role,
    SearchMemory,
    StopReason,
    Tool,
    ToolEnvironment,
    build_environment,
    environment_factory,
    error_observation,
    make_tools,
    move_left_command,
    move_right_command,
    protocol_tokens,
    read_command,
)

FAST = settings(max_examples=60, deadline=None)

# A small alphabet so random searches and pointer walks actually hit things.
TEXT_TOKENS = ["a", "b", "1", "2", "=", " ", "\n", ANS]


def tokens(text: str) -> list[str]:
    return list(text)


def all_tools_environment(**limits) -> ToolEnvironment:
    return ToolEnvironment(tools=[PointerMemory(3), SearchMemory(max_lines=4), Calculator()], **limits)


# --- pointer memory ------------------------------------------------------------------------------------
def test_pointer_command_spelling():
    assert PointerMemory(2).command_tokens() == [
        "[pointer1.read()]",
        "[pointer1.move_left()]",
        "[pointer1.move_right()]",
        "[pointer2.read()]",
        "[pointer2.move_left()]",
        "[pointer2.move_right()]",
    ]
    assert (read_command(3), move_left_command(3), move_right_command(3)) == (
        "[pointer3.read()]",
        "[pointer3.move_left()]",
        "[pointer3.move_right()]",
    )
    assert PointerMemory().num_pointers == 3
    assert len(PointerMemory(MAX_POINTERS).command_tokens()) == 3 * MAX_POINTERS


@pytest.mark.parametrize("bad", [0, 9, -1, 2.0, "3", True, None])
def test_pointer_count_is_validated(bad):
    with pytest.raises(ValueError, match="num_pointers"):
        PointerMemory(bad)


def test_pointer_boundaries():
    memory = Memory(tokens("ab"))
    tool = PointerMemory(1)
    read, left, right = tool.command_tokens()
    assert tool.run(left, [], memory) == [ERR] and tool.positions == [0]
    assert tool.run(read, [], memory) == ["a"]
    assert tool.run(right, [], memory) == [] and tool.run(right, [], memory) == []
    assert tool.positions == [2]  # one past the end is allowed
    assert tool.run(read, [], memory) == [EOM]
    assert tool.run(right, [], memory) == [ERR] and tool.positions == [2]
    memory.append("c")  # memory grows under the waiting pointer
    assert tool.run(read, [], memory) == ["c"]
    assert tool.run(right, [], memory) == [] and tool.run(read, [], memory) == [EOM]
    assert tool.run("[pointer2.read()]", [], memory) == [ERR]  # not one of this tool's commands


def test_pointers_move_independently_and_reset():
    tool = PointerMemory(2)
    memory = Memory(tokens("xyz"))
    tool.run(move_right_command(2), [], memory)
    assert tool.run(read_command(1), [], memory) == ["x"]
    assert tool.run(read_command(2), [], memory) == ["y"]
    tool.reset()
    assert tool.positions == [0, 0]


def test_pointer_on_empty_memory():
    tool = PointerMemory(1)
    memory = Memory()
    assert tool.run(read_command(1), [], memory) == [EOM]
    assert tool.run(move_left_command(1), [], memory) == [ERR]
    assert tool.run(move_right_command(1), [], memory) == [ERR]


@FAST
@given(
    prompt=st.lists(st.sampled_from(TEXT_TOKENS), max_size=6),
    stream=st.lists(
        st.one_of(
            st.sampled_from(PointerMemory(2).command_tokens()),
            st.sampled_from(["a", "7", "\n", ANS]),
        ),
        max_size=60,
    ),
)
def test_pointer_matches_a_reference_model(prompt, stream):
    """Every read returns exactly one token: the reference position's token, or [EOM]."""
    environment = ToolEnvironment(tools=[PointerMemory(2)])
    environment.reset(prompt)
    positions, memory = [0, 0], list(prompt)
    for token in stream:
        observation = environment.step(token)
        if not token.startswith("[pointer"):
            memory.append(token)
            assert observation == []
            continue
        index = int(token[len("[pointer")]) - 1
        if token.endswith(".read()]"):
            assert observation == [memory[positions[index]] if positions[index] < len(memory) else EOM]
        elif token.endswith(".move_left()]"):
            assert observation == ([ERR] if positions[index] == 0 else [])
            positions[index] = max(positions[index] - 1, 0)
        else:
            assert observation == ([ERR] if positions[index] == len(memory) else [])
            positions[index] = min(positions[index] + 1, len(memory))
    assert environment.memory.tokens == memory
    assert environment.tools[0].positions == positions


# --- search memory -------------------------------------------------------------------------------------
def grep(memory: list[str], needle: list[str]) -> list[list[str]]:
    """The plain reference: every line (split at "\\n") containing needle contiguously."""
    lines = Memory(memory).lines()
    return [
        line
        for line in lines
        if any(line[i : i + len(needle)] == needle for i in range(len(line) - len(needle) + 1))
    ]


def observation_of_lines(lines: list[list[str]], max_lines: int) -> list[str]:
    body = []
    for number, line in enumerate(lines[:max_lines]):
        body += (["\n"] if number else []) + line
    return [OBS_OPEN, *body, *([TRUNC] if len(lines) > max_lines else []), OBS_CLOSE]


def test_find_examples():
    memory = Memory(tokens("v1=True\nv2=not v1\nv3=v1 and v2\nv4=v3"))
    tool = SearchMemory()
    assert tool.run(FIND, tokens("v2="), memory) == [OBS_OPEN, *"v2=not v1", OBS_CLOSE]
    assert tool.run(FIND, tokens("v1"), memory) == [OBS_OPEN, *"v1=True\nv2=not v1\nv3=v1 and v2", OBS_CLOSE]
    assert tool.run(FIND, tokens("v9"), memory) == [OBS_OPEN, OBS_CLOSE]
    assert tool.run(FIND, [], memory) == error_observation("empty argument")
    assert tool.run(FIND, tokens("1\nv"), memory) == [OBS_OPEN, OBS_CLOSE]  # lines never hold "\n"
    assert tool.run(FIND, tokens("v4=v3"), memory) == [OBS_OPEN, *"v4=v3", OBS_CLOSE]  # unfinished line
    assert tool.run("[grep]", tokens("v"), memory)[:2] == [OBS_OPEN, ERR]


def test_find_never_confuses_a_multi_character_token_with_the_character_that_codes_it():
    """The search works on one character per token: a multi-character token's is a private-use character, and a
    token that is that very character gets a code of its own."""
    from hf_toolssm.tools.search_memory import _CODER

    wide = "[a token of several characters]"
    code = _CODER.encode(wide)
    assert len(code) == 1 and _CODER.encode(code) != code
    memory = Memory(["v", "1", "=", wide])
    assert SearchMemory().run(FIND, [code], memory) == [OBS_OPEN, OBS_CLOSE]  # not the line that holds `wide`


def test_find_truncates_at_max_lines():
    memory = Memory(tokens("x1\nx2\nx3\nx4"))
    assert SearchMemory(max_lines=2).run(FIND, ["x"], memory) == [OBS_OPEN, *"x1\nx2", TRUNC, OBS_CLOSE]
    assert SearchMemory(max_lines=4).run(FIND, ["x"], memory) == [OBS_OPEN, *"x1\nx2\nx3\nx4", OBS_CLOSE]
    with pytest.raises(ValueError):
        SearchMemory(max_lines=0)


def test_find_sees_special_tokens_and_lines_matching_twice_once():
    memory = Memory(["a", ANS, "a", ANS, "\n", "b", ANS])
    assert SearchMemory().run(FIND, ["a", ANS], memory) == [OBS_OPEN, "a", ANS, "a", ANS, OBS_CLOSE]
    every_line = [OBS_OPEN, "a", ANS, "a", ANS, "\n", "b", ANS, OBS_CLOSE]
    assert SearchMemory().run(FIND, [ANS], memory) == every_line


@FAST
@given(
    chunks=st.lists(st.lists(st.sampled_from(TEXT_TOKENS), max_size=12), min_size=1, max_size=5),
    needles=st.lists(st.lists(st.sampled_from(TEXT_TOKENS), min_size=1, max_size=3), min_size=1, max_size=5),
    max_lines=st.integers(1, 4),
)
def test_find_matches_plain_grep_while_memory_grows(chunks, needles, max_lines):
    """The incremental str index agrees with a token-list grep after every append."""
    tool, memory = SearchMemory(max_lines=max_lines), Memory()
    for chunk in chunks:
        for token in chunk:
            memory.append(token)
        for needle in needles:
            if "\n" in needle:
                expected = [OBS_OPEN, OBS_CLOSE]
            else:
                expected = observation_of_lines(grep(memory.tokens, needle), max_lines)
            assert tool.run(FIND, needle, memory) == expected
    # a new Memory object (a new sequence) must not see the old one's index
    fresh = Memory(["z"])
    assert tool.run(FIND, ["z"], fresh) == [OBS_OPEN, "z", OBS_CLOSE]


# --- calculator ----------------------------------------------------------------------------------------
def calc(text: str, tool: Calculator | None = None) -> list[str]:
    return (tool or Calculator()).run(CALC, tokens(text), Memory())


def test_calculator_examples():
    assert calc("add(123,4567)") == [OBS_OPEN, *"4690", OBS_CLOSE]
    assert calc("sub(5,12)") == [OBS_OPEN, *"-7", OBS_CLOSE]
    assert calc("sub(12,12)") == [OBS_OPEN, "0", OBS_CLOSE]
    assert calc("mul(007,0)") == [OBS_OPEN, "0", OBS_CLOSE]
    assert calc("add(007,1)") == [OBS_OPEN, "8", OBS_CLOSE]


@pytest.mark.parametrize(
    "text",
    ["pow(2,3)", "add(1,2", "add1,2)", "add(1,2,3)", "add(1)", "add(,2)", "add(-1,2)", "add(1, 2)",
     "add(1.5,2)", "add(١,2)", "ADD(1,2)", "", "add(1,2)x", "(1,2)"],
)
def test_calculator_rejects_malformed_arguments(text):
    observation = calc(text)
    assert observation[:2] == [OBS_OPEN, ERR] and observation[-1] == OBS_CLOSE


def test_calculator_rejects_multi_character_tokens_and_long_operands():
    assert Calculator().run(CALC, ["add(", "1,2)"], Memory())[:2] == [OBS_OPEN, ERR]
    assert calc("add(12345,1)", Calculator(max_digits=4))[:2] == [OBS_OPEN, ERR]
    assert calc("add(1234,1)", Calculator(max_digits=4)) == [OBS_OPEN, *"1235", OBS_CLOSE]
    assert Calculator().run("[sum]", tokens("add(1,2)"), Memory())[:2] == [OBS_OPEN, ERR]
    with pytest.raises(ValueError):
        Calculator(max_digits=0)


def test_calculator_is_exact_beyond_python_int_string_limit():
    n = 20_000  # Python >= 3.11 refuses int(str) beyond 4,300 digits by default
    nines = "9" * n
    assert calc(f"mul({nines},{nines})")[1:-1] == list("9" * (n - 1) + "8" + "0" * (n - 1) + "1")
    assert calc(f"add({nines},1)")[1:-1] == list("1" + "0" * n)
    assert calc(f"sub(1,{nines})")[1:-1] == list("-" + "9" * (n - 1) + "8")


@FAST
@given(a=st.integers(0, 10**40), b=st.integers(0, 10**40), op=st.sampled_from(["add", "sub", "mul"]))
def test_calculator_matches_python_ints(a, b, op):
    expected = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    assert calc(f"{op}({a},{b})") == [OBS_OPEN, *str(expected), OBS_CLOSE]


@FAST
@given(text=st.text(alphabet="adsubmul(),0123456789- x", max_size=20))
def test_calculator_never_raises(text):
    observation = calc(text)
    assert observation[0] == OBS_OPEN and observation[-1] == OBS_CLOSE
    body = observation[1:-1]
    assert body[:1] == [ERR] or (body and all(token in "-0123456789" for token in body))


# --- the environment -----------------------------------------------------------------------------------
def run(environment: ToolEnvironment, prompt: str, generated: list[str]) -> list[list[str]]:
    environment.reset(tokens(prompt))
    return [environment.step(token) for token in generated]


def test_memory_excludes_commands_and_observations_and_roles_are_recorded():
    environment = all_tools_environment()
    generated = [read_command(1), "7", FIND, "1", ARG_END, ANS, CALC, *"add(1,2)", ARG_END, "3", EOS]
    observations = run(environment, "1+2=", generated)
    assert observations[0] == ["1"] and observations[4] == [OBS_OPEN, *"1+2=7", OBS_CLOSE]
    assert environment.memory.tokens == [*"1+2=", "7", ANS, "3"]
    assert environment.answer() == "3" and environment.output_tokens() == ["3"]
    assert environment.stop_reason is StopReason.EOS
    P, T, C, OBS, U = Role.PROMPT, Role.THOUGHT, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT
    expected_roles = (
        [P] * 4 + [C, OBS, T] + [C, C, C] + [OBS] * 7 + [U] + [C] * 10 + [OBS, OBS, OBS] + [U, U]
    )
    assert environment.roles == expected_roles
    assert len(environment.tokens) == len(environment.roles)


@pytest.mark.parametrize("token", [*OBSERVATION_ONLY_TOKENS, ARG_END])
def test_a_generated_observation_token_is_an_error_and_stays_out_of_memory(token):
    environment = all_tools_environment()
    assert run(environment, "ab", [token]) == [[ERR]]
    assert environment.memory.tokens == ["a", "b"]
    assert environment.roles[-2:] == [Role.COMMAND, Role.OBSERVATION]


def test_max_tool_calls_stops_the_sequence():
    environment = all_tools_environment(max_tool_calls=2)
    observations = run(environment, "ab", [read_command(1)] * 3)
    assert observations == [["a"], ["a"], []]
    assert environment.stop_reason is StopReason.MAX_TOOL_CALLS


def test_malformed_calls_count_towards_max_tool_calls():
    """Each is answered with an observation: a model stuck on one must still be stopped by the budget."""
    environment = all_tools_environment(max_tool_calls=2, max_argument_tokens=1)
    observations = run(environment, "ab", [ARG_END, FIND, "a", "b", ARG_END])
    assert observations[0] == [ERR] and observations[3] == error_observation("argument too long")
    assert observations[4] == [] and environment.stop_reason is StopReason.MAX_TOOL_CALLS


def test_over_long_argument_is_an_error_and_the_command_is_dropped():
    environment = all_tools_environment(max_argument_tokens=3)
    observations = run(environment, "ab", [FIND, "a", "b", "c", "d", "e", ARG_END])
    assert observations[4] == error_observation("argument too long")
    assert observations[5] == [] and observations[6] == [ERR]  # back to ordinary tokens; a stray [/cmd]
    assert environment.num_tool_calls == 2  # the dropped command and the stray [/cmd]: each was answered
    assert environment.memory.tokens == [*"ab", "e"]
    assert run(environment, "ab", [FIND, "a", "b", "c", ARG_END])[-1] == [OBS_OPEN, OBS_CLOSE]  # at the limit


def test_observation_is_truncated_to_the_token_limit():
    environment = ToolEnvironment(tools=[SearchMemory()], max_observation_tokens=6)
    observation = run(environment, "xaaaaaaaaa\nxb", [FIND, "x", ARG_END])[-1]
    assert observation == [OBS_OPEN, *"xaa", TRUNC, OBS_CLOSE]  # exactly max_observation_tokens


def test_error_observations_respect_the_token_limit_too():
    environment = ToolEnvironment(tools=[SearchMemory()], max_argument_tokens=1, max_observation_tokens=4)
    observation = run(environment, "ab", [FIND, "a", "b"])[-1]
    assert observation == [OBS_OPEN, ERR, TRUNC, OBS_CLOSE]


def test_truncation_replaces_a_tools_own_trunc_marker():
    environment = ToolEnvironment(tools=[SearchMemory(max_lines=1)], max_observation_tokens=5)
    observation = run(environment, "xaaaaa\nxb", [FIND, "x", ARG_END])[-1]
    assert observation == [OBS_OPEN, *"xa", TRUNC, OBS_CLOSE]


@pytest.mark.parametrize(
    "limits", [{"max_observation_tokens": 2}, {"max_argument_tokens": 0}, {"max_tool_calls": -1}]
)
def test_limits_are_validated(limits):
    with pytest.raises(ValueError):
        all_tools_environment(**limits)


def test_eos_inside_an_argument_stops_the_sequence():
    environment = all_tools_environment()
    observations = run(environment, "ab", [FIND, "a", EOS])
    assert observations == [[], [], []]
    assert environment.stop_reason is StopReason.EOS
    assert environment.roles[-1] is Role.THOUGHT and environment.memory.tokens == ["a", "b"]


def test_a_tool_exception_becomes_an_error_observation():
    class Broken(PointerMemory):
        def run(self, command, argument, memory):
            raise RuntimeError("bug")

    environment = ToolEnvironment(tools=[Broken(1)])
    assert run(environment, "a", [read_command(1)]) == [error_observation("tool error: RuntimeError")]


def test_reset_resets_tool_state():
    environment = ToolEnvironment(tools=[PointerMemory(1), SearchMemory()])
    run(environment, "abc", [move_right_command(1), move_right_command(1), FIND, "c", ARG_END])
    observations = run(environment, "xyz", [read_command(1), FIND, "c", ARG_END])
    assert observations == [["x"], [], [], [OBS_OPEN, OBS_CLOSE]]


def test_two_tools_may_not_claim_one_command():
    with pytest.raises(ValueError, match="claimed by two tools"):
        ToolEnvironment(tools=[PointerMemory(1), PointerMemory(2)])


STREAM_TOKENS = [*TEXT_TOKENS, EOS, ARG_END, *OBSERVATION_ONLY_TOKENS, "[code]"]


@FAST
@given(
    prompt=st.lists(st.sampled_from(TEXT_TOKENS), max_size=10),
    stream=st.lists(
        st.one_of(
            st.sampled_from(STREAM_TOKENS),
            st.sampled_from(all_tools_environment().command_tokens()),
            st.sampled_from(list("add(1,2)x")),
        ),
        max_size=120,
    ),
)
def test_random_streams_keep_every_invariant(prompt, stream):
    limits = {"max_tool_calls": 30, "max_argument_tokens": 8, "max_observation_tokens": 12}
    environment = all_tools_environment(**limits)
    environment.reset(prompt)
    pointer_commands = set(environment.tools[0].command_tokens())
    commands = set(environment.command_tokens())
    stored, in_argument, answered = list(prompt), False, False
    for token in stream:
        before = len(environment.tokens)
        observation = environment.step(token)
        is_argument_token = in_argument
        in_argument = (token not in (ARG_END, EOS) and not observation) if in_argument else token in (FIND, CALC)
        # the generated token, then the observation, recorded with the right roles
        assert environment.tokens[before:] == [token, *observation]
        assert all(role is Role.OBSERVATION for role in environment.roles[before + 1 :])
        assert len(observation) <= limits["max_observation_tokens"]
        if is_argument_token:
            assert environment.roles[before] is Role.COMMAND or token == EOS
        elif token in pointer_commands:
            assert len(observation) <= 1
            if token.endswith(".read()]"):
                assert len(observation) == 1 or environment.stop_reason is StopReason.MAX_TOOL_CALLS
        if len(observation) > 1:  # an argument command's answer, or an over-long argument's error
            assert observation[0] == OBS_OPEN and observation[-1] == OBS_CLOSE
            assert TRUNC not in observation[:-2]
        is_text = not is_argument_token and token not in (*commands, *OBSERVATION_ONLY_TOKENS, ARG_END, EOS)
        if is_text:  # a thought or an output: stored in memory, with the role [ANS] decides
            stored.append(token)
            answered = answered or token == ANS
            assert environment.roles[before] is (Role.OUTPUT if answered else Role.THOUGHT)
        if environment.stop_reason is not None:
            break
    assert environment.memory.tokens == stored
    assert set(environment.memory.tokens).isdisjoint([*OBSERVATION_ONLY_TOKENS, ARG_END])
    assert environment.num_tool_calls <= limits["max_tool_calls"] + 1
    assert len(environment.tokens) == len(environment.roles)


# --- registry ------------------------------------------------------------------------------------------
def test_make_tools_and_factories_build_fresh_tools():
    tools = make_tools({"pointer": {"num_pointers": 2}, "search": None, "calculator": {}})
    assert [type(tool) for tool in tools] == [PointerMemory, SearchMemory, Calculator]
    assert tools[0].num_pointers == 2
    assert [type(tool) for tool in make_tools(["search"])] == [SearchMemory]
    with pytest.raises(ValueError, match="unknown tool"):
        make_tools(["hammer"])
    factory = environment_factory({"pointer": None}, max_tool_calls=5)
    first, second = factory(), factory()
    assert first.tools[0] is not second.tools[0] and first.max_tool_calls == 5
    assert build_environment(["calculator"]).command_tokens() == [CALC]
    factory = environment_factory(name for name in ["search"])  # a one-shot iterable of names
    assert [type(tool) for tool in factory().tools] == [type(tool) for tool in factory().tools] == [SearchMemory]


def test_protocol_tokens_are_stable_and_complete():
    vocabulary = protocol_tokens()
    fixed = ["[PAD]", "[EOS]", "[ANS]", "[/cmd]", "[OBS]", "[/OBS]", "[ERR]", "[EOM]", "[TRUNC]"]
    assert vocabulary[:9] == fixed
    assert vocabulary[-3:] == ["[find]", "[calc]", "[code]"]
    assert len(vocabulary) == len(set(vocabulary)) == 9 + 3 * MAX_POINTERS + 3


# --- the protocol doc ----------------------------------------------------------------------------------
def test_protocol_doc_examples_are_current():
    path = Path(__file__).resolve().parents[1] / "docs" / "make_protocol_examples.py"
    spec = importlib.util.spec_from_file_location("make_protocol_examples", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    in_doc = script.blocks(script.DOC.read_text())
    assert in_doc == script.examples(), "run `python docs/make_protocol_examples.py --write`"


def test_the_protocol_docs_example_of_a_tool_of_your_own_runs():
    """docs/protocol.md section 9 defines a tool and drives it; its code block must keep working."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    section = text[text.index("## 9. A tool of your own") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```\n", start)]
    namespace: dict = {}
    exec(compile(code, "docs/protocol.md", "exec"), namespace)  # asserts the observation itself
    env = namespace["ToolEnvironment"]([namespace["Reverse"]()])
    env.reset(list("x"))
    assert [env.step(t) for t in ["[rev]", "[/cmd]"]][-1] == error_observation("usage: [rev]TEXT[/cmd]")



@pytest.mark.parametrize("returned", [None, [7], ["a", None], [EOS], [PAD], ("a",)])
def test_a_tool_returning_a_malformed_observation_gets_a_defined_error_observation(returned):
    """Not a TypeError in the decode, nor ints in the trace, nor an [EOS] that would end only the generate()
    route's row: a tool bug, answered as a raising tool's is."""

    class Sloppy(Tool):
        name = "sloppy"

        def command_tokens(self) -> list[str]:
            return ["[sloppy]"]

        def run(self, command, argument, memory):
            return returned

    env = ToolEnvironment([Sloppy()])
    env.reset(list("x"))
    assert env.step("[sloppy]") == error_observation("tool error: malformed observation")
    assert all(isinstance(token, str) for token in env.tokens)
