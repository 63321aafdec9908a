"""The generation layer: the fast tool loop (``generate_with_tools``) and ``ToolCallingLogitsProcessor`` in
stock ``model.generate()``.

Hand-written reference traces are replayed by a scripted model (``tests/scripted_model.py``) through both
paths, which must reproduce them token for token, roles included; tiny random models (ToolMamba, ToolRNN,
GPT-NeoX) check that the two paths agree on free-running, tool-calling decodes.
"""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from randomize import randomize_
from scripted_model import ScriptedConfig, ScriptedModel
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    LogitsProcessor,
    PreTrainedTokenizerFast,
)
from transformers.generation.streamers import BaseStreamer

from hf_toolssm import ToolMambaConfig, ToolMambaForCausalLM, ToolRNNConfig, ToolRNNForCausalLM
from hf_toolssm.generation import (
    ToolCallingLogitsProcessor,
    ToolGenerationResult,
    generate_with_logits_processor,
    generate_with_tools,
    tool_loop,
)
from hf_toolssm.tasks import get_task
from hf_toolssm.tokenization import CHARACTERS, add_tool_tokens, build_char_tokenizer
from hf_toolssm.tools import (
    ANS,
    ARG_END,
    CALC,
    EOM,
    EOS,
    ERR,
    FIND,
    OBS_CLOSE,
    OBS_OPEN,
    OBSERVATION_ONLY_TOKENS,
    TRUNC,
    Calculator,
    EnvironmentFactory,
    Memory,
    PointerMemory,
    Role,
    SearchMemory,
    StopReason,
    Tool,
    ToolEnvironment,
    error_observation,
)

TOKENIZER = build_char_tokenizer()
PAD_ID, EOS_ID = TOKENIZER.pad_token_id, TOKENIZER.eos_token_id
P, T, C, OBS, A = Role.PROMPT, Role.THOUGHT, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT


# --- reference traces, written by hand --------------------------------------------------------------------
def trace(*segments: tuple[Role, str | list[str]]) -> tuple[list[str], list[Role]]:
    """Tokens and roles from (role, tokens) segments; a string is split into characters."""
    tokens, roles = [], []
    for role, part in segments:
        part = list(part)
        tokens += part
        roles += [role] * len(part)
    return tokens, roles


def read(k: int) -> str:
    return f"[pointer{k}.read()]"


def right(k: int) -> str:
    return f"[pointer{k}.move_right()]"


def left(k: int) -> str:
    return f"[pointer{k}.move_left()]"


# docs/protocol.md's worked example: 7 + 5 with two pointers; the sum digits are written least significant
# first as thoughts, then read back in reverse after [ANS].
ADDITION = trace(
    (P, "7+5="),
    (C, [read(1)]), (OBS, ["7"]),
    (C, [right(2), right(2), read(2)]), (OBS, ["5"]),
    (T, "21"),
    (A, [ANS]),
    (C, [right(2), right(2), right(2), read(2)]), (OBS, ["1"]),
    (A, "1"),
    (C, [left(2), read(2)]), (OBS, ["2"]),
    (A, ["2", EOS]),
)  # fmt: skip
ADDITION_MEMORY = [*"7+5=21", ANS, *"12"]

# Variable chasing with [find] (max_lines=2): c=b, b=a, a=1, so c=1. The thought "c=1\n" becomes a
# searchable line, a search with more than 2 matching lines is truncated, and a miss gives an empty [OBS].
FIND_CHAIN = trace(
    (P, "a=1\nb=a\nc=b\n"),
    (C, [FIND, *"c=", ARG_END]), (OBS, [OBS_OPEN, *"c=b", OBS_CLOSE]),
    (C, [FIND, *"b=", ARG_END]), (OBS, [OBS_OPEN, *"b=a", OBS_CLOSE]),
    (C, [FIND, *"a=", ARG_END]), (OBS, [OBS_OPEN, *"a=1", OBS_CLOSE]),
    (T, "c=1\n"),
    (C, [FIND, *"=1", ARG_END]), (OBS, [OBS_OPEN, *"a=1", "\n", *"c=1", OBS_CLOSE]),
    (C, [FIND, "=", ARG_END]), (OBS, [OBS_OPEN, *"a=1", "\n", *"b=a", TRUNC, OBS_CLOSE]),
    (C, [FIND, "z", ARG_END]), (OBS, [OBS_OPEN, OBS_CLOSE]),
    (A, [ANS, "1", EOS]),
)  # fmt: skip

# Every kind of malformed call the model can make (max_argument_tokens=8), each answered with the
# protocol's error observation, then a good [calc] and an answer.
MALFORMED = trace(
    (P, "x=1\n"),
    (C, [OBS_OPEN]), (OBS, [ERR]),
    (C, [EOM]), (OBS, [ERR]),
    (C, [ARG_END]), (OBS, [ERR]),
    (C, [FIND, *"xxxxxxxxx"]), (OBS, error_observation("argument too long")),  # at the 9th argument token
    (T, "y"),  # the dropped command's tokens are over: this is an ordinary thought
    (C, [ARG_END]), (OBS, [ERR]),  # a stray [/cmd]
    (C, [CALC, *"2*3", ARG_END]), (OBS, error_observation("expected op(a,b)")),
    (C, [CALC, ANS, ARG_END]), (OBS, error_observation("argument must be plain characters")),
    (C, [CALC, *"add(1,x)", ARG_END]), (OBS, error_observation("operands must be non-negative decimal integers")),
    (C, ["[code]"]), (OBS, error_observation("tool error: ZeroDivisionError")),  # a tool that raises
    (C, [CALC, *"mul(6,7)", ARG_END]), (OBS, [OBS_OPEN, *"42", OBS_CLOSE]),
    (A, [ANS, *"42", EOS]),
)  # fmt: skip

# [EOS] in the middle of an argument ends the sequence; the unfinished command is dropped.
EOS_IN_ARGUMENT = trace((P, "q"), (C, [FIND, "q"]), (T, [EOS]))

SCRIPTED = {"addition": ADDITION, "find": FIND_CHAIN, "malformed": MALFORMED, "eos_in_argument": EOS_IN_ARGUMENT}
ANSWERS = {"addition": "12", "find": "1", "malformed": "42", "eos_in_argument": ""}


class BuggyTool(Tool):
    """A tool whose ``run`` raises: the environment must turn that into an observation."""

    name = "buggy"

    def command_tokens(self) -> list[str]:
        return ["[code]"]

    def run(self, command: str, argument: list[str], memory: Memory) -> list[str]:
        return [str(1 // 0)]


def scripted_environment(**limits) -> ToolEnvironment:
    """One environment for every scripted trace: each row still gets its own tools and state."""
    tools = [PointerMemory(2), SearchMemory(max_lines=2), Calculator(), BuggyTool()]
    return ToolEnvironment(tools=tools, **{"max_argument_tokens": 8, **limits})


class RecordingFactory:
    """An environment factory that keeps the environments it built, to inspect them after a decode."""

    def __init__(self, **limits):
        self.limits = limits
        self.envs: list[ToolEnvironment] = []

    def __call__(self) -> ToolEnvironment:
        self.envs.append(scripted_environment(**self.limits))
        return self.envs[-1]


def scripted_model(tokenizer=TOKENIZER, names=tuple(SCRIPTED), eos_token: str = EOS) -> ScriptedModel:
    traces = []
    for name in names:
        tokens = [eos_token if token == EOS else token for token in SCRIPTED[name][0]]
        traces.append(tokenizer.convert_tokens_to_ids(tokens))
    config = ScriptedConfig(
        vocab_size=len(tokenizer), traces=traces, off_trace_id=tokenizer.unk_token_id,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return ScriptedModel(config).eval()


def prompt_of(name: str) -> list[str]:
    tokens, roles = SCRIPTED[name]
    return [token for token, role in zip(tokens, roles) if role is Role.PROMPT]


# --- the two decoding paths ------------------------------------------------------------------------------
def decode_fast(model, prompts, env_factory, tokenizer=TOKENIZER, **kwargs) -> list[ToolGenerationResult]:
    return generate_with_tools(model, tokenizer, prompts, env_factory, progress=False, **kwargs)


def decode_fast_in_step(model, prompts, env_factory, **kwargs) -> list[ToolGenerationResult]:
    """The fast loop feeding every row the same number of tokens (what attention models get)."""
    return decode_fast(model, prompts, env_factory, ragged_feed=False, **kwargs)


def decode_fast_ragged(model, prompts, env_factory, **kwargs) -> list[ToolGenerationResult]:
    """The fast loop's ragged feed at every forward, at most 3 tokens a row: observations take several padded
    forwards, prompts and observations of different lengths go in side by side."""
    with mock.patch.object(tool_loop, "RAGGED_MIN_WIDTH", 1), mock.patch.object(tool_loop, "RAGGED_MAX_WIDTH", 3):
        return decode_fast(model, prompts, env_factory, ragged_feed=True, **kwargs)


def with_blocking_tools(env_factory: EnvironmentFactory) -> EnvironmentFactory:
    """The environments of ``env_factory`` with every command blocking (``Tool.blocks``: run on a tool thread by
    the ragged feed), each after a pause of up to 3 ms, so that commands finish in another order than they start."""
    pauses = random.Random(0)

    def factory() -> ToolEnvironment:
        env = env_factory()
        for tool in env.tools:
            def paused(command, argument, memory, run=tool.run):
                time.sleep(pauses.random() * 0.003)
                return run(command, argument, memory)
            tool.blocks, tool.run = (lambda command, argument: True), paused
        return env
    return factory


def decode_fast_tool_threads(model, prompts, env_factory, **kwargs) -> list[ToolGenerationResult]:
    """The ragged feed with every command on one of two tool threads: a row waits, fed padding, while the others
    decode."""
    return decode_fast_ragged(model, prompts, with_blocking_tools(env_factory), tool_threads=2, **kwargs)


def decode_generate(
    model, prompts, env_factory, tokenizer=TOKENIZER, max_new_tokens=400, **kwargs
) -> list[ToolGenerationResult]:
    return generate_with_logits_processor(model, tokenizer, prompts, env_factory, max_new_tokens=max_new_tokens,
                                          **kwargs)


PATHS = {
    "fast_loop": decode_fast, "fast_loop_in_step": decode_fast_in_step, "fast_loop_ragged": decode_fast_ragged,
    "fast_loop_tool_threads": decode_fast_tool_threads, "generate": decode_generate,
}


def summary(result: ToolGenerationResult) -> tuple:
    return (result.tokens, result.roles, result.answer, result.stop_reason, result.num_tool_calls)


# --- 1. scripted traces through both paths ---------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_scripted_traces_are_reproduced_exactly(path):
    """One batch, four traces with different tools and tool states: every row reproduces its trace."""
    names = list(SCRIPTED)
    results = PATHS[path](scripted_model(), [prompt_of(n) for n in names], scripted_environment)
    for name, result in zip(names, results):
        tokens, roles = SCRIPTED[name]
        assert result.tokens == tokens, name
        assert result.roles == roles, name
        assert result.answer == ANSWERS[name]
        assert result.stop_reason is StopReason.EOS
        assert result.num_model_tokens == sum(r in (T, C, A) for r in roles)
        assert result.num_observation_tokens == roles.count(OBS)
    assert results[0].segments()[:3] == [(P, "7+5="), (C, read(1)), (OBS, "7")]
    assert results[0].num_tool_calls == 10  # as in docs/protocol.md


@pytest.mark.parametrize("path", PATHS)
def test_scripted_row_in_a_batch_equals_row_alone(path):
    names = list(SCRIPTED)
    model = scripted_model()
    batched = PATHS[path](model, [prompt_of(n) for n in names], scripted_environment)
    for name, result in zip(names, batched):
        alone = PATHS[path](model, [prompt_of(name)], scripted_environment)[0]
        assert summary(alone) == summary(result)


def test_the_ragged_feed_takes_fewer_forwards_with_padded_rows():
    """Guard for the ragged paths: they do feed rows different numbers of tokens in one forward (right padding).
    Fed whole, each row's queue costs one forward, so the traces take fewer forwards than in step."""
    names = list(SCRIPTED)
    model = scripted_model()
    prompts = [prompt_of(n) for n in names]
    forward, calls = model.forward, []

    def recording_forward(input_ids, attention_mask=None, **kwargs):
        calls.append(None if attention_mask is None else attention_mask.sum(dim=1).tolist())
        return forward(input_ids, attention_mask=attention_mask, **kwargs)

    model.forward = recording_forward
    in_step = decode_fast_in_step(model, prompts, scripted_environment)
    in_step_calls, calls[:] = list(calls), []
    with mock.patch.object(tool_loop, "RAGGED_MIN_WIDTH", 1):  # ragged at every forward, each whole queue at once
        ragged = decode_fast(model, prompts, scripted_environment, ragged_feed=True)
    assert [summary(r) for r in ragged] == [summary(r) for r in in_step]
    assert all(mask is None for mask in in_step_calls)
    assert any(mask is not None and len(set(mask)) > 1 for mask in calls)  # rows fed different numbers of tokens
    assert len(calls) < len(in_step_calls)


class RendezvousSearch(SearchMemory):
    """A search that blocks, and whose every call waits for a call of another row to run at the same time."""

    def __init__(self, rendezvous: threading.Barrier):
        super().__init__(max_lines=2)
        self.rendezvous = rendezvous

    def blocks(self, command: str, argument: list[str]) -> bool:
        return True

    def run(self, command: str, argument: list[str], memory: Memory) -> list[str]:
        self.rendezvous.wait()  # BrokenBarrierError (an error observation) when no other call comes
        return super().run(command, argument, memory)


@pytest.mark.parametrize("tool_threads", [2, 4])
def test_the_other_rows_decode_while_a_command_runs_on_a_tool_thread(tool_threads):
    """Row 0 searches after its prompt; row 1 thinks 6 tokens first. Each search returns only once the other row's
    is running too: row 0's must wait, fed padding, while row 1 decodes up to its own. Both traces come out as
    scripted; in line, row 0's search would wait alone (see the guard)."""
    early = trace((P, "a=1\n"), (C, [FIND, *"a=", ARG_END]), (OBS, [OBS_OPEN, *"a=1", OBS_CLOSE]), (A, [ANS, "1", EOS]))
    late = trace((P, "b=2\n"), (T, "thinks"), (C, [FIND, *"b=", ARG_END]), (OBS, [OBS_OPEN, *"b=2", OBS_CLOSE]),
                 (A, [ANS, "2", EOS]))  # fmt: skip
    config = ScriptedConfig(
        vocab_size=len(TOKENIZER), traces=[TOKENIZER.convert_tokens_to_ids(tokens) for tokens, _ in (early, late)],
        off_trace_id=TOKENIZER.unk_token_id, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
    )
    model, prompts = ScriptedModel(config).eval(), [list("a=1\n"), list("b=2\n")]

    def decode(threads: int | None, timeout: float) -> list[ToolGenerationResult]:
        rendezvous = threading.Barrier(2, timeout=timeout)
        return decode_fast(model, prompts, lambda: ToolEnvironment([RendezvousSearch(rendezvous)]), ragged_feed=True,
                           tool_threads=threads, max_new_tokens=40)

    for result, (tokens, roles) in zip(decode(tool_threads, timeout=30), (early, late), strict=True):
        assert (result.tokens, result.roles) == (tokens, roles)
    # guard: in line, the first search waits for a second that never comes
    inline = decode(0, timeout=0.05)
    assert inline[0].answer != "1" and "BrokenBarrierError" in "".join(inline[0].tokens)


def test_tool_threads_default_to_the_cores_torch_leaves_free(monkeypatch):
    """A program on a core that torch's threads use stalls every forward: on the CPU, the default takes only the
    cores beside them (at most one a row); a CUDA model's forwards leave every core free."""
    model = tiny_mamba(0)
    monkeypatch.setattr(tool_loop, "available_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert tool_loop.default_tool_threads(model, rows=50) == 6
    assert tool_loop.default_tool_threads(model, rows=3) == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert tool_loop.default_tool_threads(model, rows=50) == 0
    with mock.patch.object(type(model), "device", new_callable=mock.PropertyMock, return_value=torch.device("cuda")):
        assert tool_loop.default_tool_threads(model, rows=50) == 8


def test_the_ragged_feed_is_refused_for_a_model_that_would_cache_its_padding():
    with pytest.raises(ValueError, match="ragged_feed=True needs a model whose padding leaves its cache"):
        decode_fast(tiny_gpt_neox(0), ["7+5="], random_environment, ragged_feed=True)


def test_off_trace_history_is_visible():
    """The scripted model is not a tautology: wrong observations put it off its trace."""
    wrong_tools = lambda: ToolEnvironment(tools=[PointerMemory(2)])  # noqa: E731  (no [find]: no observations)
    result = decode_fast(scripted_model(), [prompt_of("find")], wrong_tools, max_new_tokens=10)[0]
    assert result.tokens != FIND_CHAIN[0][: len(result.tokens)]
    assert "[UNK]" in result.tokens


# --- 4. memory -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_memory_excludes_commands_and_observations(path):
    factory = RecordingFactory()
    names = ["addition", "find", "malformed"]
    results = PATHS[path](scripted_model(), [prompt_of(n) for n in names], factory)
    assert len(factory.envs) == 3
    assert factory.envs[0].memory.tokens == ADDITION_MEMORY
    assert "".join(factory.envs[1].memory.tokens) == "a=1\nb=a\nc=b\nc=1\n" + ANS + "1"
    assert "".join(factory.envs[2].memory.tokens) == "x=1\ny" + ANS + "42"
    for env, result in zip(factory.envs, results):
        expected = [t for t, r in zip(result.tokens, result.roles) if r in (P, T, A) and t != EOS]
        assert env.memory.tokens == expected
        assert not set(env.memory.tokens) & {*OBSERVATION_ONLY_TOKENS, ARG_END, FIND, CALC, read(1), read(2)}


# --- 5. stop reasons -------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_new_tokens", [1, 2, 6, 11, 19])
def test_max_new_tokens_cuts_both_paths_alike(max_new_tokens):
    model = scripted_model()
    prompts = [prompt_of("addition"), prompt_of("find")]
    fast = decode_fast(model, prompts, scripted_environment, max_new_tokens=max_new_tokens)
    slow = decode_generate(model, prompts, scripted_environment, max_new_tokens=max_new_tokens)
    for name, f, s in zip(["addition", "find"], fast, slow):
        assert summary(f) == summary(s)
        assert f.stop_reason is StopReason.MAX_TOKENS
        n = len(f.tokens)
        assert (f.tokens, f.roles) == (SCRIPTED[name][0][:n], SCRIPTED[name][1][:n])  # a prefix of the trace
        generated = n - len(prompt_of(name))
        # Cut at the first token that reaches the limit; that token's observation is recorded in full.
        assert generated >= max_new_tokens and generated - f.num_observation_tokens <= max_new_tokens


@pytest.mark.parametrize("path", PATHS)
def test_tool_call_limit_stops_the_row(path):
    results = PATHS[path](scripted_model(), [prompt_of("addition")], lambda: scripted_environment(max_tool_calls=3))
    result = results[0]
    assert result.stop_reason is StopReason.MAX_TOOL_CALLS
    # Three calls run; the fourth command is recorded but refused, with no observation, and nothing follows.
    assert result.tokens == [*"7+5=", read(1), "7", right(2), right(2), read(2)]
    assert result.roles == [P] * 4 + [C, OBS, C, C, C]
    assert result.num_tool_calls == 4


def test_eos_stops_and_time_budget_zero_stops_immediately():
    model = scripted_model()
    prompts = [prompt_of("addition"), prompt_of("find")]
    assert [r.stop_reason for r in decode_fast(model, prompts, scripted_environment)] == [StopReason.EOS] * 2
    for result, prompt in zip(decode_fast(model, prompts, scripted_environment, time_budget=0), prompts):
        assert result.stop_reason is StopReason.TIME_BUDGET
        assert result.tokens == prompt and result.num_model_tokens == 0


def test_the_time_budget_ends_rows_whose_command_is_still_running():
    """Row 0's first search runs on a tool thread until row 1 has decoded to its end, then past the time budget:
    the loop waits for the command (its own time limit bounds it), keeps its observation and ends the row."""
    other_row_done = threading.Event()

    def slow_environment() -> ToolEnvironment:
        env = with_blocking_tools(scripted_environment)()
        search, run = env.tools[1], env.tools[1].run

        def waits(command, argument, memory):
            other_row_done.wait(timeout=30)
            time.sleep(max(0.0, started + budget + 0.1 - time.monotonic()))  # past the budget
            return run(command, argument, memory)
        search.run = waits
        return env

    streamed = {0: [], 1: []}

    def on_token(row, token, role):
        streamed[row].append(token)
        if row == 1 and token == EOS:
            other_row_done.set()

    prompts, budget = [prompt_of("find"), prompt_of("addition")], 2.0  # seconds: row 1 decodes well within it
    started = time.monotonic()
    results = decode_fast_ragged(scripted_model(), prompts, slow_environment, tool_threads=2, time_budget=budget,
                                 on_token=on_token)
    assert [r.stop_reason for r in results] == [StopReason.TIME_BUDGET, StopReason.EOS]
    assert results[1].answer == ANSWERS["addition"]
    find = results[0]
    assert find.roles[find.roles.index(OBS) - 1] is C and find.tokens[find.roles.index(OBS)] == OBS_OPEN
    for row, (result, prompt) in enumerate(zip(results, prompts, strict=True)):  # the command's tail streamed too
        assert streamed[row] == result.tokens[len(prompt):]


def test_time_budget_zero_ends_every_row_of_the_logits_processor_path():
    prompts = [prompt_of("addition"), prompt_of("find")]
    for result, prompt in zip(decode_generate(scripted_model(), prompts, scripted_environment, time_budget=0), prompts):
        assert result.stop_reason is StopReason.TIME_BUDGET
        assert result.tokens == prompt and result.num_model_tokens == 0


def test_the_processors_time_budget_counts_from_start_clock_when_given(monkeypatch):
    """generate_with_logits_processor starts the clock before generate(), as generate_with_tools does at its call:
    a prompt's forward that takes longer than the budget ends every row at the first step."""
    model = scripted_model()
    forward = model.forward

    def slow_prompt(input_ids, *args, **kwargs):
        if input_ids.shape[1] > 1:  # the prompt's forward; later steps feed one token
            time.sleep(0.3)
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(model, "forward", slow_prompt)
    prompts = [prompt_of("addition")]
    (result,) = decode_generate(model, prompts, scripted_environment, time_budget=0.2)
    assert result.stop_reason is StopReason.TIME_BUDGET and result.num_model_tokens == 0
    processor = ToolCallingLogitsProcessor(TOKENIZER, scripted_environment, time_budget=0.2)  # its own clock:
    inputs = TOKENIZER(["".join(prompts[0])], return_tensors="pt")                             # from the first step
    sequences = model.generate(**inputs, logits_processor=[processor], max_new_tokens=400, do_sample=False,
                               pad_token_id=TOKENIZER.pad_token_id, eos_token_id=TOKENIZER.eos_token_id)
    assert processor.results(sequences)[0].stop_reason is StopReason.EOS


# --- 7. streaming ----------------------------------------------------------------------------------------
class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.values: list[list[int]] = []
        self.ended = False

    def put(self, value):
        self.values.append(value.flatten().tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_every_token_with_the_logits_processor():
    streamer = RecordingStreamer()
    prompt = prompt_of("addition")
    result = decode_generate(scripted_model(), [prompt], scripted_environment, streamer=streamer)[0]
    assert streamer.ended
    assert streamer.values[0] == TOKENIZER.convert_tokens_to_ids(prompt)  # generate() streams the prompt first
    streamed = [TOKENIZER.convert_ids_to_tokens(ids)[0] for ids in streamer.values[1:]]
    assert streamed == result.generated_tokens == ADDITION[0][len(prompt) :]  # observations included


def test_on_token_streams_every_token_with_its_role():
    names = ["addition", "find", "malformed"]
    streamed: dict[int, list[tuple[str, Role]]] = {row: [] for row in range(3)}
    results = decode_fast(
        scripted_model(), [prompt_of(n) for n in names], scripted_environment,
        on_token=lambda row, token, role: streamed[row].append((token, role)),
    )
    for row, result in enumerate(results):
        prompt_length = len(prompt_of(names[row]))
        assert streamed[row] == list(zip(result.tokens, result.roles))[prompt_length:]


# --- 2 and 3. tiny random models: both paths agree, rows do not leak ---------------------------------------
RANDOM_PROMPTS = ["7+5=", "123+4567=", "a=1\nb=a\n", "9"]


def random_environment() -> ToolEnvironment:
    """Every tool, small limits: a random model calls tools, errs, truncates and runs out of calls."""
    tools = [PointerMemory(8), SearchMemory(max_lines=2), Calculator()]
    return ToolEnvironment(tools=tools, max_tool_calls=12, max_argument_tokens=6, max_observation_tokens=8)


def tiny_mamba(seed: int) -> ToolMambaForCausalLM:
    torch.manual_seed(seed)
    config = ToolMambaConfig(
        vocab_size=len(TOKENIZER), hidden_size=32, state_size=8, num_hidden_layers=2,
        tie_word_embeddings=False, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=EOS_ID,
    )
    return randomize_(ToolMambaForCausalLM(config), seed).eval()  # at init, padding that moved the state would pass


def tiny_rnn(seed: int, cell_type: str) -> ToolRNNForCausalLM:
    torch.manual_seed(seed)
    config = ToolRNNConfig(
        vocab_size=len(TOKENIZER), hidden_size=32, num_hidden_layers=2, cell_type=cell_type,
        initializer_range=1.0, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=EOS_ID,
    )
    return ToolRNNForCausalLM(config).eval()


def tiny_gpt_neox(seed: int, vocab_size: int = len(TOKENIZER)):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, initializer_range=0.5, tie_word_embeddings=False,
        pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=EOS_ID,
    )
    return AutoModelForCausalLM.from_config(config).eval()


RANDOM_MODELS = {
    "mamba": tiny_mamba,
    "lstm": lambda seed: tiny_rnn(seed, "lstm"),
    "gru": lambda seed: tiny_rnn(seed, "gru"),
}


def assert_consistent_roles(result: ToolGenerationResult, prompt: str) -> None:
    """Structural checks that hold for any decode: the prompt, then observations only after commands."""
    assert result.tokens[: len(prompt)] == list(prompt) and result.roles[: len(prompt)] == [P] * len(prompt)
    assert P not in result.roles[len(prompt) :]
    for i, role in enumerate(result.roles):
        if role is OBS:
            assert result.roles[i - 1] in (C, OBS)
    assert result.stop_reason in (StopReason.EOS, StopReason.MAX_TOKENS, StopReason.MAX_TOOL_CALLS)
    assert (result.stop_reason is StopReason.EOS) == (result.tokens[-1] == EOS)


@pytest.mark.parametrize("kind", RANDOM_MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_loop_equals_logits_processor_on_random_models(kind, seed):
    model = RANDOM_MODELS[kind](seed)
    fast = decode_fast(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    slow = decode_generate(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    in_step = decode_fast_in_step(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    ragged = decode_fast_ragged(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    threads = decode_fast_tool_threads(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    for prompt, f, s, i, r, t in zip(RANDOM_PROMPTS, fast, slow, in_step, ragged, threads):
        assert summary(f) == summary(s) == summary(i) == summary(r) == summary(t)
        assert_consistent_roles(f, prompt)


@pytest.mark.parametrize("kind", ["mamba", "gru"])
def test_sampled_traces_are_the_same_with_every_feed(kind):
    """Each row samples from its own generator, seeded from the caller's: its trace depends on its own draws alone,
    not on which forward it reaches a token at (the feeds differ in that, and tool threads make it a matter of
    timing). The same seed decodes the same traces; another seed, and greedy decoding, do not."""
    model = RANDOM_MODELS[kind](0)

    def sample(path, seed):
        return [summary(r) for r in PATHS[path](model, RANDOM_PROMPTS, random_environment, max_new_tokens=40,
                                                do_sample=True, generator=torch.Generator().manual_seed(seed))]

    sampled = sample("fast_loop", 0)
    for path in ("fast_loop_in_step", "fast_loop_ragged", "fast_loop_tool_threads"):
        assert sample(path, 0) == sampled, path
    greedy = [summary(r) for r in decode_fast(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)]
    assert sample("fast_loop", 1) != sampled != greedy


def test_sampling_draws_from_the_models_distribution_at_the_temperature():
    """A model whose mass is all on one token samples that token (the scripted traces); fixed logits over three
    tokens are drawn with softmax(logits / T) frequencies (temperature 1 alone would not tell T from 1 / T)."""
    names = list(SCRIPTED)
    sampled = decode_fast(scripted_model(), [prompt_of(n) for n in names], scripted_environment, do_sample=True,
                          generator=torch.Generator().manual_seed(0))
    assert [r.tokens for r in sampled] == [SCRIPTED[n][0] for n in names]

    model = scripted_model()
    ids = TOKENIZER.convert_tokens_to_ids(["a", "b", "c"])
    logits = torch.full((len(TOKENIZER),), -1e4)
    logits[ids] = torch.tensor([0.0, -0.5, -1.0])
    forward = model.forward

    def fixed_logits(input_ids, **kwargs):
        outputs = forward(input_ids, **kwargs)
        outputs.logits = logits.expand(*input_ids.shape, -1).clone()  # (b, l, vocab)
        return outputs

    model.forward = fixed_logits
    rows, temperature = 3000, 0.5
    results = decode_fast(model, [["x"]] * rows, scripted_environment, do_sample=True, temperature=temperature,
                          max_new_tokens=1, generator=torch.Generator().manual_seed(0))
    drawn = [r.tokens[-1] for r in results]
    expected = torch.softmax(logits[ids] / temperature, dim=0).tolist()  # [0.665, 0.245, 0.090]
    assert [drawn.count(t) / rows for t in "abc"] == pytest.approx(expected, abs=0.045)  # 4 sigma at 3,000 draws


def test_the_ragged_width_takes_the_widest_chunk_that_is_mostly_tokens():
    width = tool_loop._ragged_width
    assert width([1, 1, 1, 40]) == 1  # one long queue among one-token ones: 40 wide would be 74% padding
    assert width([30, 30, 1, 1]) == 30  # half tokens: ragged
    assert width([100, 50, 1]) == tool_loop.RAGGED_MAX_WIDTH == 64  # capped (100 wide would be half tokens too)
    assert width([100, 100]) == 100  # equal queues: in step, nothing to pad
    assert width([3, 5]) == 3  # narrower than RAGGED_MIN_WIDTH: in step, no padding

def test_random_models_exercise_the_tools():
    """Guard for the test above: the random decodes are not trivial (commands, observations, errors)."""
    results = [
        r for kind in RANDOM_MODELS for seed in (0, 1, 2)
        for r in decode_fast(RANDOM_MODELS[kind](seed), RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    ]  # fmt: skip
    roles = [role for r in results for role in r.roles]
    assert roles.count(C) > 50 and roles.count(OBS) > 50 and roles.count(T) > 50
    assert sum(r.num_tool_calls for r in results) > 30
    assert {r.stop_reason for r in results} >= {StopReason.MAX_TOKENS, StopReason.MAX_TOOL_CALLS}
    observations = {t for r in results for t, role in zip(r.tokens, r.roles) if role is OBS}
    assert {ERR, OBS_OPEN} <= observations


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["mamba", "lstm"])
def test_random_model_row_in_a_batch_equals_row_alone(path, kind):
    model = RANDOM_MODELS[kind](1)
    batched = PATHS[path](model, RANDOM_PROMPTS, random_environment, max_new_tokens=30)
    for prompt, result in zip(RANDOM_PROMPTS, batched):
        alone = PATHS[path](model, [prompt], random_environment, max_new_tokens=30)[0]
        assert summary(alone) == summary(result)


# --- 8. attention models from transformers -----------------------------------------------------------------
def tiny_mistral(seed: int, sliding_window: int = 8):
    from transformers import MistralConfig

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(TOKENIZER), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, sliding_window=sliding_window, initializer_range=0.5,
        tie_word_embeddings=False, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=EOS_ID,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("make", [tiny_gpt_neox, tiny_mistral], ids=["gpt_neox", "mistral_swa"])
def test_the_static_kv_cache_decodes_what_the_dynamic_one_does(make):
    """generate_with_logits_processor preallocates transformers' KV cache (faster); the decode must be the
    dynamic cache's, token for token, past a sliding window too."""
    model = make(0)
    generate, seen = model.generate, []
    model.generate = lambda **kwargs: seen.append(kwargs.get("cache_implementation")) or generate(**kwargs)
    static = decode_generate(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    assert seen == ["static"]
    dynamic = decode_generate(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40,
                              cache_implementation="dynamic")
    assert [summary(r) for r in static] == [summary(r) for r in dynamic]
    assert sum(len(r.generated_tokens) for r in static) > 8 * len(RANDOM_PROMPTS)  # beyond the window


@pytest.mark.parametrize("make", [tiny_gpt_neox, tiny_mistral], ids=["gpt_neox", "mistral_swa"])
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_models_with_the_logits_processor_and_the_fast_loop(make, seed):
    """The fast loop (what ``toolssm eval`` decodes with) only needs forward(input_ids, cache, use_cache) ->
    .logits, .cache and cache.reorder_cache, which transformers' KV caches have too; observations go in as
    multi-token forwards on the cache, finished rows leave it, and a sliding window is crossed."""
    model = make(seed)
    slow = decode_generate(model, RANDOM_PROMPTS, random_environment, max_new_tokens=40)
    for prompt, result in zip(RANDOM_PROMPTS, slow):
        assert_consistent_roles(result, prompt)
    assert sum(r.num_tool_calls for r in slow) > 0
    # Rows are never padded in the fast loop, so for prompts of one length both paths see the same positions
    # and agree exactly.
    prompts = ["7+5=", "9*8=", "ab\nc"]
    fast = decode_fast(model, prompts, random_environment, max_new_tokens=40)
    slow = decode_generate(model, prompts, random_environment, max_new_tokens=40)
    assert [summary(r) for r in fast] == [summary(r) for r in slow]
    assert sum(r.num_observation_tokens for r in fast) > 0
    assert max(len(r.generated_tokens) for r in fast) > 8  # past the sliding window


class NoCacheOutput(dict):
    """A forward result without a cache."""

    def __getattr__(self, name):
        return self.get(name)


def test_fast_loop_rejects_a_model_without_a_cache():
    model = scripted_model()
    forward = model.forward
    model.forward = lambda *args, **kwargs: NoCacheOutput(logits=forward(*args, **kwargs).logits)
    with pytest.raises(TypeError, match="returned no cache"):
        decode_fast(model, [prompt_of("addition")], scripted_environment)


# --- a tokenizer whose end-of-sequence token is its own, as pretrained tokenizers have ---------------------
def pretrained_style_tokenizer() -> PreTrainedTokenizerFast:
    vocabulary = ["<pad>", "</s>", "<unk>", *CHARACTERS]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    add_tool_tokens(tokenizer)  # keeps "</s>" as the end of sequence: the protocol's [EOS] is not added
    return tokenizer


@pytest.mark.parametrize("path", PATHS)
def test_the_tokenizers_own_eos_ends_the_trace(path):
    tokenizer = pretrained_style_tokenizer()
    assert EOS not in tokenizer.get_vocab()
    model = scripted_model(tokenizer, names=["addition"], eos_token="</s>")
    result = PATHS[path](model, [prompt_of("addition")], scripted_environment, tokenizer=tokenizer)[0]
    assert result.stop_reason is StopReason.EOS
    assert result.answer == "12"
    assert (result.tokens, result.roles) == ADDITION  # the trace is in protocol tokens: "</s>" reads as [EOS]


# --- the logits processor, reused --------------------------------------------------------------------------
def generate_with(processor, model, prompt: list[str], max_new_tokens: int = 400) -> ToolGenerationResult:
    input_ids = torch.tensor([TOKENIZER.convert_tokens_to_ids(prompt)])
    sequences = model.generate(input_ids=input_ids, logits_processor=[processor], max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=PAD_ID, eos_token_id=EOS_ID)
    return processor.results(sequences)[0]


def test_logits_processor_reused_for_a_second_generate_call():
    """A processor passed to two generate() calls must start over, even when the second prompts are longer
    than the first decode, or exactly one token longer than it (the length a next step would have)."""
    model = scripted_model()
    processor = ToolCallingLogitsProcessor(TOKENIZER, scripted_environment)
    first = generate_with(processor, model, prompt_of("addition"), max_new_tokens=3)
    assert first.stop_reason is StopReason.MAX_TOKENS
    second = generate_with(processor, model, prompt_of("find"))
    assert (second.tokens, second.roles) == FIND_CHAIN
    short = generate_with(processor, model, prompt_of("addition"), max_new_tokens=3)
    one_longer = ["9"] * (len(short.tokens) + 1)
    third = generate_with(processor, model, one_longer, max_new_tokens=3)
    assert third.tokens[: len(one_longer)] == one_longer and third.roles[: len(one_longer)] == [P] * len(one_longer)


# --- vocabularies that do not match the protocol or the model ------------------------------------------------
def tokenizer_without_a_space() -> PreTrainedTokenizerFast:
    """As byte-level BPE vocabularies, which have no bare " " (their space is part of the next token)."""
    vocabulary = ["<pad>", "</s>", "<unk>", *[c for c in CHARACTERS if c != " "]]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    add_tool_tokens(tokenizer)
    return tokenizer


def test_an_observation_the_vocabulary_cannot_spell_is_fed_as_unknown_tokens():
    """A failed search answers "[ERR]not found"-style text with a space in it; the model reads <unk> there."""
    tokenizer = tokenizer_without_a_space()
    trace = tokenizer.convert_tokens_to_ids(["q", "[find]", "[/cmd]"])
    config = ScriptedConfig(vocab_size=len(tokenizer), traces=[trace], off_trace_id=tokenizer.unk_token_id,
                            pad_token_id=0, eos_token_id=1)
    model = ScriptedModel(config).eval()
    results = {path: PATHS[path](model, [["q"]], scripted_environment, tokenizer=tokenizer, max_new_tokens=30)[0]
               for path in PATHS}
    fast, generate = results["fast_loop"], results["generate"]
    assert (fast.tokens, fast.roles, fast.stop_reason) == (generate.tokens, generate.roles, generate.stop_reason)
    observation = [t for t, role in zip(fast.tokens, fast.roles) if role is OBS]
    assert " " in observation  # the environment's own text, kept in the trace as the tool wrote it


@pytest.mark.parametrize("path", PATHS)
def test_ids_past_the_tokenizer_are_never_picked(path):
    """Embedding matrices are often padded past len(tokenizer); those rows have no token for a tool to read."""
    torch.manual_seed(0)
    config = ToolMambaConfig(vocab_size=len(TOKENIZER) + 8, hidden_size=32, state_size=8, num_hidden_layers=1,
                             tie_word_embeddings=False)
    model = ToolMambaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[len(TOKENIZER) :] *= 100  # the padded rows would win every argmax
    (result,) = PATHS[path](model, [prompt_of("addition")], scripted_environment, max_new_tokens=20)
    assert len(result.tokens) > len(prompt_of("addition"))
    assert set(result.tokens) <= set(TOKENIZER.get_vocab())


# --- misuse of the two routes --------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[1] / "model_cards" / "toolmamba-addition"


@pytest.mark.parametrize("path", ["fast_loop", "generate"])
def test_one_prompt_given_as_a_string_is_refused_not_split_into_characters(path):
    with pytest.raises(TypeError, match=r"prompts is a list of prompts; for one, pass \['12\+34='\]"):
        PATHS[path](scripted_model(), "12+34=", scripted_environment)


@pytest.mark.parametrize("path", ["fast_loop", "generate"])
def test_a_prompt_holding_the_padding_token_is_refused(path):
    """The generate() route would drop the prompt's leading pads from the tools' memory (they look like its own
    left padding) while the model still reads them: the two would disagree on what the prompt was."""
    with pytest.raises(ValueError, match=r"a prompt holds the padding token \[PAD\]"):
        PATHS[path](scripted_model(), [["[PAD]", *prompt_of("addition")]], scripted_environment)


def test_a_right_padded_batch_in_a_direct_generate_is_refused():
    """The shipped tokenizers pad on the right (training's side); generate() needs prompts padded on the left."""
    processor = ToolCallingLogitsProcessor(TOKENIZER, scripted_environment)
    inputs = TOKENIZER(["7+5=", "17+25="], return_tensors="pt", padding=True)
    assert TOKENIZER.padding_side == "right"
    with pytest.raises(ValueError, match=r"pad prompts on the left \(tokenizer.padding_side = 'left'\)"):
        scripted_model().generate(**inputs, logits_processor=[processor], max_new_tokens=5, do_sample=False,
                                  pad_token_id=TOKENIZER.pad_token_id)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_sampling_takes_a_finite_positive_temperature(temperature):
    """As generate() does: not a silent greedy decode at 0, nor ids past the tokenizer sampled at infinity."""
    with pytest.raises(ValueError, match="temperature must be a finite number > 0 to sample"):
        decode_fast(scripted_model(), [prompt_of("addition")], scripted_environment, do_sample=True,
                    temperature=temperature)


def test_beam_search_is_refused_by_both_ways_into_generate():
    """Beams reorder rows between steps; each row's tools have run on its own tokens."""
    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    environment = get_task("addition").make_environment
    with pytest.raises(ValueError, match=r"not beam search \(num_beams > 1\)"):
        generate_with_logits_processor(model, tokenizer, [list("12+34=")], environment, max_new_tokens=50,
                                       num_beams=2)
    processor = ToolCallingLogitsProcessor(tokenizer, environment)
    with pytest.raises(RuntimeError, match=r"Beam search .* reorders rows"):
        model.generate(**tokenizer(["12+34="], return_tensors="pt"), logits_processor=[processor], num_beams=2,
                       max_new_tokens=50, do_sample=False)


def test_a_processor_reused_after_results_starts_its_next_call_afresh():
    """The next call's prompt may extend the last call's: "1+2=" then "1+2=5" is not one call going on."""
    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    processor = ToolCallingLogitsProcessor(tokenizer, get_task("addition").make_environment)
    first = model.generate(**tokenizer(["1+2="], return_tensors="pt"), logits_processor=[processor],
                           max_new_tokens=1, do_sample=False)
    processor.results(first)
    second = model.generate(**tokenizer(["1+2=5"], return_tensors="pt"), logits_processor=[processor],
                            max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    (result,) = processor.results(second)  # a GenerateOutput: its sequences
    assert "".join(result.tokens[: result.roles.count(Role.PROMPT)]) == "1+2=5"
    with pytest.raises(ValueError, match=r"2 sequences for the 1 rows of the last generate\(\) call"):
        processor.results(second.sequences.repeat(2, 1))


class ForcesSomethingElse(LogitsProcessor):
    """A processor listed after the tool-calling one that moves every forced choice to another token."""

    def __call__(self, input_ids, scores):
        forced = (scores > torch.finfo(scores.dtype).min).sum(dim=-1) == 1  # (batch,)
        scores[forced] = scores[forced].roll(1, dims=-1)
        return scores


def test_a_forced_observation_token_that_another_processor_changed_is_an_error():
    """Else the trace would show an observation the model never saw."""
    processor = ToolCallingLogitsProcessor(TOKENIZER, scripted_environment)
    inputs = torch.tensor([TOKENIZER.convert_tokens_to_ids(prompt_of("find"))])
    with pytest.raises(RuntimeError, match=r"was forced .* put this one last"):
        scripted_model().generate(inputs, logits_processor=[processor, ForcesSomethingElse()], max_new_tokens=40,
                                  do_sample=False, pad_token_id=PAD_ID, eos_token_id=EOS_ID)
