"""Tasks and their data: every reference trace replays exactly through the real tools and answers
correctly (hundreds per task, and 1,000-digit / 1,000-node / 12-disk instances), answers are checked
independently of the traces, decisions are local, arguments are validated, and the datasets mask the
prompt and the observations, are deterministic and keep test prompts out of training.

``pytest -m slow tests/test_tasks.py`` replays 10^4 training instances of every task."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hf_toolssm.data import (
    IGNORE_INDEX,
    MAX_REJECTIONS,
    ToolDataCollator,
    build_dataset,
    build_iterable_dataset,
    collate,
    encode_instance,
    micro_batches,
)
from hf_toolssm.tasks import TASKS, ReplayMismatch, Trace, get_task, register_task, replay
from hf_toolssm.tasks.addition_ablations import NO_TOOL_ERR
from hf_toolssm.tasks.hanoi import IterativeHanoiTask, RecursiveHanoiTask, optimal_moves
from hf_toolssm.tasks.logical_graph import label_pool_size, random_graph
from hf_toolssm.tokenization import build_char_tokenizer
from hf_toolssm.tools import ANS, EOS, ERR, Role

# Test sizes per task beyond the training range, still fast (the long ones are further down).
TEST_SIZES = {
    "addition": (1, 7, 30),
    "multiplication": (1, 12, 30),
    "mixture": (1, 25),
    "hanoi_iterative": (1, 4, 6),
    "hanoi_recursive": (1, 4, 7),
    "logical_graph": (4, 12, 60),
    "addition_no_cot": (1, 30),
    "addition_reversed_no_cot": (1, 30),
    "addition_cot_no_tool": (1, 30),
    "addition_calculator": (1, 30),
    "coding_single_turn": (4, 16),
    "coding_interactive": (4, 16),
}
# Hanoi training traces reach 40k tokens at 8 disks; the fast tests sample them up to 5.
FAST_TRAIN_MAX = {"hanoi_iterative": 5, "hanoi_recursive": 5}
# Replaying a coding trace runs Python in the sandbox (~50 ms a run, up to a dozen runs a trace): a few here,
# tests/test_coding_task.py covers them in depth. Other tasks: 200 training replays, 10 or 30 per test size.
REPLAYS = {"coding_single_turn": 4, "coding_interactive": 4}
SLOW_REPLAYS = {"coding_single_turn": 500, "coding_interactive": 200}


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def memory_text(instance) -> str:
    """What the environment's memory holds at the end: prompt, thoughts, outputs."""
    kept = (Role.PROMPT, Role.THOUGHT, Role.OUTPUT)
    return "".join(t for t, r in zip(instance.full_tokens(), instance.roles()) if r in kept and t != EOS)


def assert_replays(task, instance):
    result = replay(instance)
    assert result.correct and result.answer == instance.answer
    assert task.check(instance, result.answer)
    assert instance.full_tokens()[-1] == EOS
    return result


# --- every task: reference traces replay through the real tools ---------------------------------------
def test_registry_lists_every_task():
    assert set(TASKS) == set(TEST_SIZES)
    for name in TASKS:
        assert get_task(name).name == name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_traces_replay_and_answer_correctly(name):
    task = get_task(name)
    rng = random.Random(f"replay:{name}")
    for _ in range(REPLAYS.get(name, 200)):
        assert_replays(task, task.sample_train(rng, FAST_TRAIN_MAX.get(name)))
    for size in TEST_SIZES[name]:
        for _ in range(REPLAYS.get(name, 10 if size > 10 or name.startswith("hanoi") else 30)):
            instance = task.sample(rng, size)
            assert instance.size == size
            assert_replays(task, instance)


@pytest.mark.parametrize(
    ("name", "options", "size", "count"),
    [
        ("addition", {}, 1000, 2),
        ("addition_calculator", {}, 1000, 2),  # a call longer than the environment's default argument limit
        ("multiplication", {"k": 1}, 1000, 1),
        ("multiplication", {"k": 2}, 1000, 2),
        ("logical_graph", {}, 1000, 3),
        ("hanoi_iterative", {}, 12, 1),
        ("hanoi_recursive", {}, 12, 1),
    ],
)
def test_long_instances_replay(name, options, size, count):
    task = get_task(name, **options)
    rng = random.Random(f"long:{name}")
    for _ in range(count):
        instance = task.sample(rng, size)
        assert_replays(task, instance)
        if name.startswith("hanoi"):
            assert len(task.parse_moves(instance.metadata["disks"], instance.answer)) == 2**size - 1


# --- answers, checked without the traces ---------------------------------------------------------------
def test_arithmetic_answers_match_python_ints():
    rng = random.Random(0)
    for task, operation in (
        (get_task("addition"), int.__add__),
        (get_task("multiplication", k=3), int.__mul__),
    ):
        for size in (1, 2, 5, 50, 400):
            instance = task.sample(rng, size)
            a, b = instance.metadata["a"], instance.metadata["b"]
            assert len(a) == size and a[0] != "0" and b[0] != "0"
            assert instance.answer == str(operation(int(a), int(b))) == replay(instance).answer


def test_logical_graph_answer_is_what_python_computes_from_the_prompt():
    task, rng = get_task("logical_graph"), random.Random(1)
    for size in (4, 10, 100, 500):
        for _ in range(5):
            instance = task.sample(rng, size)
            namespace: dict = {}
            exec("".join(instance.prompt), {}, namespace)  # the prompt is Python
            assert instance.answer == str(namespace[instance.metadata["output"]])
            assert len(namespace) == size


@pytest.mark.parametrize("task_class", [IterativeHanoiTask, RecursiveHanoiTask])
def test_hanoi_check_accepts_any_legal_solution_and_nothing_else(task_class):
    task = task_class()
    instance = task.instance([7, 5, 2])
    moves = optimal_moves([7, 5, 2])
    assert moves[0] == (2, "A", "C") and len(moves) == 7
    detour = [(2, "A", "B"), (2, "B", "A"), *moves]  # legal, not optimal
    assert task.check(instance, task.render_answer([7, 5, 2], detour))
    assert not task.check(instance, task.render_answer([7, 5, 2], moves[:-1]))  # not solved
    assert not task.check(instance, task.render_answer([7, 5, 2], [(5, "A", "B"), *moves]))  # illegal
    assert not task.check(instance, instance.answer + "x")
    assert not task.check(instance, "")
    two = task.instance([5, 2])
    assert not task.check(two, task.render_answer([5, 2], [(2, "A", "C"), (5, "A", "C")]))  # larger onto smaller
    assert not task.check(two, task.render_answer([5, 2], [(2, "A", "C"), (5, "A", "B"), (2, "C", "B")]))  # on B


def test_hanoi_iterative_check_wants_the_right_states():
    task = IterativeHanoiTask()
    instance = task.instance([5, 2])
    assert instance.answer == "(2)AB$>2B5A\n(5)AC$>2B5C\n(2)BC$>2C5C\n"
    assert not task.check(instance, instance.answer.replace(">2B5C", ">2B5A"))
    assert not task.check(instance, instance.answer.replace(">", "<"))  # the state line's direction mark counts


@pytest.mark.parametrize("name", sorted(TASKS))
def test_check_rejects_a_wrong_answer(name):
    task = get_task(name)
    instance = task.sample(random.Random(2), TEST_SIZES[name][1])
    assert task.check(instance, instance.answer)
    assert not task.check(instance, instance.answer[:-1])
    assert not task.check(instance, instance.answer + "1")


# --- trace formats -------------------------------------------------------------------------------------
def test_addition_trace_format():
    instance = get_task("addition").instance("57", "8")
    assert memory_text(instance) == "57+8=5B6A[ANS]65"
    tokens = instance.full_tokens()
    # b runs out first (a '+' is read, the pointer steps back), then a ([ERR] at the start of memory)
    assert tokens.count(ERR) == 1
    assert "".join(tokens).count("[pointer2.read()]+[pointer2.move_right()]") == 2
    assert get_task("addition").instance("5", "5").answer == "10"
    assert memory_text(get_task("addition").instance("5", "5")) == "5+5=0B1A[ANS]10"


def test_multiplication_trace_format():
    assert (
        memory_text(get_task("multiplication", k=2).instance("47", "12"))
        == "47*12=4B9A+0A7A4A=4A6B5A[ANS]564"
    )
    assert memory_text(get_task("multiplication", k=2).instance("47", "3")) == "47*3=1C4B1A=1A4A1A[ANS]141"
    assert memory_text(get_task("multiplication", k=1).instance("99", "9")) == "99*9=1I9I8A=[ANS]891"
    assert (
        memory_text(get_task("multiplication", k=3).instance("5", "105"))
        == "5*105=5C2A+0A0A+0A0A5A=5A2A5A[ANS]525"
    )


def test_hanoi_trace_formats():
    assert memory_text(IterativeHanoiTask().instance([5, 2])) == (
        "(5)(2)CB>2A5A\n[ANS](2)AB$>2B5A\n(5)AC$>2B5C\n(2)BC$>2C5C\n"
    )
    assert memory_text(RecursiveHanoiTask().instance([5, 2])) == "(5)(2)##(2)AC$#[ANS](2)AB$(5)AC$(2)BC$"
    # multi-digit sizes are copied digit by digit; the parity letters give the direction mark
    assert memory_text(IterativeHanoiTask().instance([100, 42, 7])).startswith("(100)(42)(7)CBC<7A42A100A\n")


def test_logical_graph_trace_format():
    instance = get_task("logical_graph").sample(random.Random(3), 6)
    text = "".join(instance.full_tokens())
    assert text.endswith(f"[ANS]{instance.answer}{EOS}")
    assert instance.prompt[-1] == "\n"
    thoughts = "".join(t for t, r in zip(instance.full_tokens(), instance.roles()) if r is Role.THOUGHT)
    assert thoughts.endswith("\n")  # every thought line is finished before the next search
    output = instance.metadata["output"]
    assert f"{output} = {instance.answer}\n" in thoughts  # the output node's memo line


def test_logical_graph_with_print_output_opens_with_a_fixed_command():
    """The prompt ends with print(OUTPUT); the trace looks that line up first and then continues exactly
    as the default layout's trace does, and the real tool replays it."""
    plain, printing = get_task("logical_graph"), get_task("logical_graph", print_output=True)
    for size in (4, 12, 60):
        graph = random_graph(random.Random(size), size, 3)
        default, instance = plain.instance(graph), printing.instance(graph)
        assert "".join(instance.prompt) == "".join(default.prompt) + f"print({graph.output})\n"
        opening = f"[find]print([/cmd][OBS]print({graph.output})[/OBS]"
        assert "".join(instance.trace.tokens) == opening + "".join(default.trace.tokens)
        assert replay(instance).correct
        typed = "".join(instance.prompt)
        without_print = typed.rsplit("print", 1)[0]
        assert printing.instance_from_text(typed).trace == printing.instance_from_text(without_print).trace
    with pytest.raises(ValueError, match=r"print\(v1\) must name the last gate"):
        printing.instance_from_text("v1 = True\nv2 = not v1\nprint(v1)\n")


def test_logical_graph_with_reread_gate_rewrites_the_line_it_just_read():
    """reread_gate: every gate line the model writes follows a lookup of that gate, so the line it rewrites is
    in the observation just read; the answer is the same and the real tool replays the trace."""
    plain, rereading = get_task("logical_graph"), get_task("logical_graph", reread_gate=True)
    for size in (4, 12, 60):
        graph = random_graph(random.Random(size), size, 3)
        default, instance = plain.instance(graph), rereading.instance(graph)
        assert instance.answer == default.answer and instance.prompt == default.prompt
        assert replay(instance).correct
        text = "".join(instance.trace.tokens)
        written = re.findall(r"\[/OBS\](v\d+) = ", text)  # thought lines that rewrite a gate
        assert written and len(written) == len(re.findall(r"\[/OBS\](v\d+) = ", "".join(default.trace.tokens)))
        for match in re.finditer(r"\[find\](v\d+) =\[/cmd\]\[OBS\][^\[]*\[/OBS\](v\d+) = ", text):
            assert match.group(1) == match.group(2)
        assert len(re.findall(r"\[find\](v\d+) =\[/cmd\]\[OBS\][^\[]*\[/OBS\](v\d+) = ", text)) == len(written)


def test_ablation_trace_formats():
    a, b = "57", "8"
    no_cot = get_task("addition_no_cot").instance(a, b)
    assert "".join(no_cot.trace.tokens) == f"{ANS}65{EOS}"
    assert get_task("addition_reversed_no_cot").instance(a, b).answer == "56"
    calculator = get_task("addition_calculator").instance(a, b)
    assert "".join(calculator.trace.tokens) == f"[calc]add(57,8)[/cmd][OBS]65[/OBS]{ANS}65{EOS}"
    cot = get_task("addition_cot_no_tool").instance(a, b)
    with_tool = get_task("addition").instance(a, b)
    before_answer = with_tool.trace.tokens[: with_tool.trace.tokens.index(ANS)]
    assert cot.trace.tokens == [NO_TOOL_ERR if t == ERR else t for t in before_answer] + [ANS, "6", "5", EOS]
    assert set(cot.roles()) == {Role.PROMPT, Role.THOUGHT, Role.OUTPUT}


# --- locality: the design goal the prototype taught ----------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "window"),
    [("addition", {}, 9), ("multiplication", {"k": 1}, 10), ("multiplication", {"k": 2}, 10)],
)
def test_every_decision_is_a_function_of_the_last_few_tokens(name, options, window):
    """The paper's string-matching learner (Thm 2.2): a table from the last ``window`` tokens to the next
    model token, built from training-size traces, never conflicts and never mispredicts a longer trace."""
    task, table = get_task(name, **options), {}

    def windows(instance):
        tokens, roles = instance.full_tokens(), instance.roles()
        for i in range(len(instance.prompt), len(tokens)):
            if roles[i] not in (Role.PROMPT, Role.OBSERVATION):
                yield tuple(tokens[max(0, i - window) : i]), tokens[i]

    rng = random.Random(4)
    for _ in range(600):
        for key, token in windows(task.sample_train(rng)):
            assert table.setdefault(key, token) == token, f"{key} -> {table[key]} or {token}"
    seen = 0
    for _ in range(5):
        for key, token in windows(task.sample(rng, 60)):
            seen += key in table
            assert table.get(key, token) == token
    assert seen > 1000


# --- samplers ------------------------------------------------------------------------------------------
def test_training_distributions_cover_the_paper_ranges():
    rng = random.Random(5)
    addition = [get_task("addition").sample_train(rng).metadata for _ in range(2000)]
    lengths = Counter((len(m["a"]), len(m["b"])) for m in addition)
    assert set(lengths) == {(x, y) for x in range(1, 6) for y in range(1, 6)}  # independent U{1..5}
    multiplication = [get_task("multiplication", k=2).sample_train(rng).metadata for _ in range(1000)]
    assert {len(m["a"]) for m in multiplication} == set(range(1, 11))
    assert {len(m["b"]) for m in multiplication} == {1, 2}
    assert (
        get_task("hanoi_iterative").default_train_max_size,
        get_task("hanoi_recursive").default_train_max_size,
    ) == (8, 7)
    assert {get_task("hanoi_recursive").sample_train(rng, 4).size for _ in range(100)} == set(range(1, 5))
    assert {get_task("logical_graph").sample_train(rng).size for _ in range(300)} == set(range(4, 11))


def test_hanoi_disks_are_distinct_sizes_from_1_to_100_largest_first():
    rng = random.Random(6)
    for _ in range(50):
        disks = RecursiveHanoiTask().sample(rng, 6).metadata["disks"]
        assert disks == sorted(set(disks), reverse=True) and min(disks) >= 1 and max(disks) <= 100


def test_logical_graph_labels_are_distinct_and_the_pool_grows_past_1000_nodes():
    assert label_pool_size(10) == label_pool_size(1000) == 1000 and label_pool_size(1001) == 10_000
    graph = random_graph(random.Random(7), 1000, 3)
    names = [*graph.inputs, *(gate.name for gate in graph.gates)]
    assert len(set(names)) == 1000 and all(0 <= int(name[1:]) < 1000 for name in names)
    assert all(1 <= len(gate.operands) <= 2 for gate in graph.gates) and len(graph.inputs) == 3
    names = [gate.name for gate in random_graph(random.Random(7), 1500, 3).gates]
    assert len(set(names)) == 1497 and max(int(name[1:]) for name in names) >= 1000


def test_mixture_draws_addition_with_probability_weight():
    rng = random.Random(8)
    for weight, low, high in ((0, 0, 0), (0.5, 400, 600), (1, 1000, 1000)):
        task = get_task("mixture", weight=weight)
        kinds = Counter(task.sample_train(rng).task for _ in range(1000))
        assert low <= kinds["addition"] <= high
    task = get_task("mixture", weight=0.5)
    assert task.sample(rng, 30).task == "multiplication"
    addition = next(i for i in iter(lambda: task.sample_train(rng), None) if i.task == "addition")
    assert len(addition.metadata["a"]) == len(addition.metadata["b"])  # the auxiliary task is n+n
    assert replay(addition, task.make_environment()).correct  # one environment serves both


def test_sampling_is_deterministic_for_a_seed():
    for name in TASKS:
        task = get_task(name)
        first = [task.sample_train(random.Random(9), FAST_TRAIN_MAX.get(name)) for _ in range(3)]
        again = [task.sample_train(random.Random(9), FAST_TRAIN_MAX.get(name)) for _ in range(3)]
        assert [i.full_tokens() for i in first] == [i.full_tokens() for i in again]


# --- arguments -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "unknown task 'nope'; known tasks: addition, multiplication"),
        ("addition", {"k": 2}, "task 'addition' has no option 'k'; it takes no options"),
        ("multiplication", {"kk": 2}, "has no option 'kk'; its options are k"),
        ("multiplication", {"k": 4}, "k is the number of digits of the multiplier"),
        ("multiplication", {"k": 0}, "must be an int in 1..3, got 0"),
        ("multiplication", {"k": 2.0}, "must be an int in 1..3"),
        ("mixture", {"weight": 1.5}, "weight is the probability of an auxiliary addition example"),
        ("mixture", {"k": 9}, "must be an int in 1..3, got 9"),
        ("logical_graph", {"k": 0}, "k is the number of input nodes"),
        ("logical_graph", {"print_output": "yes"}, "print_output must be true or false, got 'yes'"),
        ("logical_graph", {"reread_gate": 1}, "reread_gate must be true or false, got 1"),
    ],
)
def test_bad_task_arguments_say_what_is_wrong(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_task(name, **options)


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("addition", 0, "size is the number of digits per operand and must be an int >= 1, got 0"),
        ("addition", True, "must be an int >= 1, got True"),
        ("multiplication", 2.5, "must be an int >= 1, got 2.5"),
        ("hanoi_iterative", 17, "size is the number of disks and must be an int in 1..16, got 17"),
        ("hanoi_recursive", 0, "must be an int in 1..16, got 0"),
        ("logical_graph", 3, "size is the number of nodes \\(inputs included\\) and must be an int >= 4"),
    ],
)
def test_bad_sizes_say_what_is_wrong(name, size, message):
    task = get_task(name)
    with pytest.raises(ValueError, match=message):
        task.sample(random.Random(0), size)
    with pytest.raises(ValueError, match=message.replace("size is", "max_size is")):
        task.sample_train(random.Random(0), size)


def test_a_logical_graph_with_many_inputs_trains_on_graphs_large_enough_for_them():
    task = get_task("logical_graph", k=12)
    assert task.sample_train(random.Random(0)).size == 13


def test_a_logical_graph_with_one_input_samples_and_replays():
    task, rng = get_task("logical_graph", k=1), random.Random(0)
    for _ in range(30):  # the first gate has one earlier node: it can only be an identity
        assert_replays(task, task.sample(rng, 5))
        assert_replays(task, task.sample_train(rng))


def test_prompts_from_text():
    assert get_task("addition").prompt_from_text("123+4567") == list("123+4567=")
    assert get_task("multiplication", k=1).prompt_from_text("12*3=") == list("12*3=")
    assert get_task("hanoi_iterative").prompt_from_text("7 5 2") == list("(7)(5)(2)")
    assert get_task("mixture").prompt_from_text("12+3") == list("12+3=")
    code = "v1 = True\nv2 = False\nv3 = v1 and not v2\n"
    assert get_task("logical_graph").prompt_from_text(code) == list(code)
    for name, text in [
        ("addition", "12-3"),
        ("addition", "012+3"),
        ("multiplication", "12*345"),
        ("hanoi_recursive", "(2)(5)"),
        ("hanoi_iterative", "(200)"),
        ("hanoi_iterative", "(7.5)(2)"),
        ("hanoi_iterative", "x-9,y3"),
        ("coding_interactive", "5--3"),
        ("logical_graph", "v1 = True\nv2 = v9\n"),
        ("logical_graph", "v1 = True\n"),
    ]:
        with pytest.raises(ValueError, match=get_task(name).name):
            get_task(name).prompt_from_text(text)
    with pytest.raises(ValueError, match="more than k=1 digits"):
        get_task("multiplication", k=1).instance("12", "34")
    for seed in (-3, 10**12):  # the repository line could not name it
        with pytest.raises(ValueError, match="seed must be a whole number"):
            get_task("coding_interactive").instance(5, seed)


TYPED_PROBLEMS = {
    "addition": "123+4567", "addition_no_cot": "99+1", "addition_reversed_no_cot": "99+1",
    "addition_cot_no_tool": "99+1", "addition_calculator": "99+1", "multiplication": "1234*56",
    "mixture": "1234*56", "hanoi_iterative": "7 5 2", "hanoi_recursive": "(9)(4)(3)(1)",
    "logical_graph": "v7 = True\nv3 = False\nv12 = False\nv5 = v7 and not v3\nv9 = not v5 or v12\nv1 = v9\n",
    "coding_single_turn": "5-42", "coding_interactive": "repo 5-42",
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_typed_problem_gives_its_reference_instance(name):
    """What ``toolssm solve`` checks the model against: the typed problem's prompt, with a trace the
    real tools replay to the reference answer."""
    task = get_task(name)
    instance = task.instance_from_text(TYPED_PROBLEMS[name])
    assert instance.prompt == task.prompt_from_text(TYPED_PROBLEMS[name])
    assert replay(instance).correct and task.check(instance, instance.answer)


def test_a_typed_logical_graph_is_the_graph_the_task_samples():
    task = get_task("logical_graph")
    for size in (4, 10, 60):
        sampled = task.sample(random.Random(size), size)
        typed = task.instance_from_text("".join(sampled.prompt))
        assert (typed.trace, typed.answer) == (sampled.trace, sampled.answer)
    assert task.instance_from_text(TYPED_PROBLEMS["logical_graph"]).answer == "False"  # not (True and True) or False
    for text in (
        "v1 = True\nv2 = v1 and not v1\n",  # one operand twice: the DFS substitutes operands by label
        "v1 = True\nv2 = not v1\nv3 = False\nv4 = v2 or v3\n",  # an input after a gate
    ):
        with pytest.raises(ValueError, match="bad line"):
            task.instance_from_text(text)


# --- replay catches disagreements ----------------------------------------------------------------------
def corrupted(instance, position, token=None, role=None):
    tokens, roles = list(instance.trace.tokens), list(instance.trace.roles)
    if token is not None:
        tokens[position] = token
    if role is not None:
        roles[position] = role
    return dataclasses.replace(instance, trace=Trace(tokens, roles))


def test_replay_rejects_traces_the_tools_do_not_reproduce():
    instance = get_task("addition").instance("57", "8")
    observation = instance.trace.roles.index(Role.OBSERVATION)
    with pytest.raises(ReplayMismatch, match="injected"):
        replay(corrupted(instance, observation, token="9"))
    with pytest.raises(ReplayMismatch, match="did not inject"):
        replay(corrupted(instance, observation - 1, token="7", role=Role.THOUGHT))
    with pytest.raises(ReplayMismatch, match="must end with"):
        replay(
            dataclasses.replace(instance, trace=Trace(instance.trace.tokens[:-1], instance.trace.roles[:-1]))
        )
    with pytest.raises(ReplayMismatch, match="stopped"):
        replay(corrupted(instance, 0, token=EOS))
    thought = instance.trace.roles.index(Role.THOUGHT)
    with pytest.raises(ReplayMismatch, match="the trace says output"):
        replay(corrupted(instance, thought, role=Role.OUTPUT))
    assert not replay(dataclasses.replace(instance, answer="66")).correct


# --- data: masks, collator, determinism, splits --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TASKS))
def test_loss_is_masked_on_prompt_and_observations_only(name, tokenizer):
    task = get_task(name)
    instance = task.sample(random.Random(10), TEST_SIZES[name][1])
    example = encode_instance(instance, tokenizer)
    ids = tokenizer.convert_tokens_to_ids(instance.full_tokens())
    assert example["input_ids"] == ids and example["attention_mask"] == [1] * len(ids)
    for token_id, label, role in zip(ids, example["labels"], instance.roles()):
        assert label == (IGNORE_INDEX if role in (Role.PROMPT, Role.OBSERVATION) else token_id)
    masked = sum(label == IGNORE_INDEX for label in example["labels"])
    observations = instance.roles().count(Role.OBSERVATION)
    assert masked == len(instance.prompt) + observations
    if name == "addition_cot_no_tool":
        assert observations == 0  # its would-be observations are thoughts: only the prompt is masked
    if name in ("addition", "multiplication", "hanoi_iterative", "logical_graph"):
        assert observations > 0
    assert tokenizer.decode(ids) == "".join(instance.full_tokens())


def test_collator_right_pads(tokenizer):
    dataset = build_dataset(get_task("addition"), tokenizer, 8, seed=0)
    batch = ToolDataCollator(tokenizer.pad_token_id)([dataset[i] for i in range(8)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    lengths = [len(dataset[i]["input_ids"]) for i in range(8)]
    assert batch["input_ids"].shape == (8, max(lengths))
    for row, length in enumerate(lengths):
        assert batch["input_ids"][row, :length].tolist() == dataset[row]["input_ids"]
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="empty batch"):
        collate([], 0)


@pytest.mark.parametrize("max_tokens", [1, 300, 2000, 10**6])
def test_micro_batches_hold_every_row_once_trimmed_and_within_the_token_cap(tokenizer, max_tokens):
    dataset = build_dataset(get_task("hanoi_recursive"), tokenizer, 12, seed=0)  # lengths 2^n apart
    examples = [dataset[i] for i in range(12)]
    batch = collate(examples, tokenizer.pad_token_id)
    parts = micro_batches(batch, max_tokens)
    # every example once, with its labels, whatever padding its micro-batch kept
    kept = sorted(
        (tuple(ids[:length]), tuple(labels[:length]))
        for part in parts
        for ids, labels, length in zip(part["input_ids"].tolist(), part["labels"].tolist(),
                                       part["attention_mask"].sum(1).tolist())
    )
    assert kept == sorted((tuple(e["input_ids"]), tuple(e["labels"])) for e in examples)
    for part in parts:
        rows, width = part["input_ids"].shape
        assert int(part["attention_mask"].sum(1).max()) == width  # trimmed to its own longest row
        assert rows == 1 or rows * width <= max_tokens
        assert set(part) == {"input_ids", "attention_mask", "labels"} and part["labels"].shape == (rows, width)
    if max_tokens in (1, 10**6):  # a row each; the whole batch
        assert len(parts) == {1: 12, 10**6: 1}[max_tokens]
    else:
        assert 1 < len(parts) < 12
    assert micro_batches(batch, None) == [batch]


def test_datasets_are_deterministic_and_the_stream_matches(tokenizer):
    task = get_task("multiplication", k=2)
    first = build_dataset(task, tokenizer, 20, seed=3)
    assert first.to_dict() == build_dataset(task, tokenizer, 20, seed=3).to_dict()
    assert first["prompt"] != build_dataset(task, tokenizer, 20, seed=4)["prompt"]
    stream = build_iterable_dataset(task, tokenizer, seed=3)
    assert [row["input_ids"] for row in stream.take(20)] == first["input_ids"]
    test = build_dataset(task, tokenizer, 5, seed=3, sizes=[12, 15])
    assert test["size"] == [12] * 5 + [15] * 5
    assert build_dataset(task, tokenizer, 5, seed=3, sizes=[15])["prompt"] == test["prompt"][5:]
    assert set(test["prompt"]).isdisjoint(first["prompt"])


def test_iterable_dataset_shards_are_distinct_streams(tokenizer):
    from datasets.distributed import split_dataset_by_node

    stream = build_iterable_dataset(get_task("addition"), tokenizer, seed=0, num_shards=2)
    assert stream.num_shards == 2
    ranks = [[row["prompt"] for row in split_dataset_by_node(stream, rank, 2).take(30)] for rank in (0, 1)]
    assert ranks[0] != ranks[1]


def test_training_data_never_contains_a_test_prompt(tokenizer):
    task = get_task("addition")
    test = build_dataset(task, tokenizer, 40, seed=0, sizes=[1, 2])  # 1-digit: 81 problems in all
    train = build_dataset(task, tokenizer, 400, seed=0, max_size=2, exclude=test)
    assert set(train["prompt"]).isdisjoint(test["prompt"])
    unguarded = build_dataset(task, tokenizer, 400, seed=0, max_size=2)
    assert not set(unguarded["prompt"]).isdisjoint(test["prompt"])  # without exclude they do collide
    stream = build_iterable_dataset(task, tokenizer, seed=0, max_size=2, exclude=test)
    assert {row["prompt"] for row in stream.take(400)}.isdisjoint(test["prompt"])


def test_excluding_the_whole_training_distribution_is_an_error(tokenizer):
    everything = [f"{a}+{b}=" for a in range(1, 10) for b in range(1, 10)]
    with pytest.raises(ValueError, match=f"{MAX_REJECTIONS} training samples in a row were excluded"):
        build_dataset(get_task("addition"), tokenizer, 1, seed=0, max_size=1, exclude=everything)
    with pytest.raises(ValueError, match="exclude and max_size apply to training data"):
        build_dataset(get_task("addition"), tokenizer, 1, seed=0, sizes=[3], exclude=everything)


def test_unknown_tokens_are_an_error():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    digits_only = Tokenizer(
        models.WordLevel(vocab={"[UNK]": 0, **{str(d): d + 1 for d in range(10)}}, unk_token="[UNK]")
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=digits_only, unk_token="[UNK]")
    with pytest.raises(ValueError, match="add_tool_tokens"):
        encode_instance(get_task("addition").instance("1", "1"), tokenizer)


# --- the task doc ----------------------------------------------------------------------------------------
def test_tasks_doc_is_current():
    path = Path(__file__).resolve().parents[1] / "docs" / "make_tasks_doc.py"
    spec = importlib.util.spec_from_file_location("make_tasks_doc", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.DOC.read_text() == script.render(), "run `python docs/make_tasks_doc.py --write`"


# --- slow: 10^4 replays per task -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_ten_thousand_training_instances_replay(name):
    task, rng, started, tokens = get_task(name), random.Random(f"slow:{name}"), time.monotonic(), 0
    for _ in range(SLOW_REPLAYS.get(name, 10_000)):
        instance = task.sample_train(rng)
        tokens += assert_replays(task, instance).num_tokens
    count = SLOW_REPLAYS.get(name, 10_000)
    print(f"{name}: {count:,} instances, {tokens:,} tokens, {time.monotonic() - started:.0f} s")


def _doc_blocks(language: str) -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "docs" / "your_own_task.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@pytest.fixture
def my_tasks(tmp_path, monkeypatch):
    """docs/your_own_task.md's module, written out as my_tasks.py on the import path."""
    (tmp_path / "my_tasks.py").write_text(_doc_blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)
    yield importlib.import_module("my_tasks")
    sys.modules.pop("my_tasks", None)
    TASKS.pop("reverse", None)


def test_the_guide_to_a_task_of_your_own_runs_as_written(my_tasks, tmp_path, capsys):
    """Its task replays through the real tool, loads by import path from a config, trains, and solve and eval
    find it again through the checkpoint."""
    from hf_toolssm.cli import main
    from hf_toolssm.training import TrainConfig, train

    namespace = {"random": random, "ReverseTask": my_tasks.ReverseTask}
    exec(compile(_doc_blocks("python")[1], "docs/your_own_task.md", "exec"), namespace)  # asserts the replay
    assert isinstance(get_task("my_tasks:ReverseTask"), my_tasks.ReverseTask)
    register_task(my_tasks.ReverseTask)  # and by its short name
    assert get_task("reverse").instance_from_text("abc").answer == "cba"

    config = yaml.safe_load(_doc_blocks("yaml")[0])
    config.update(output_dir=str(tmp_path / "run"), steps=2, batch_size=4,
                  model_kwargs={"hidden_size": 16, "num_hidden_layers": 1, "state_size": 4})
    (tmp_path / "reverse.yaml").write_text(yaml.safe_dump(config))
    final = train(TrainConfig.from_yaml(tmp_path / "reverse.yaml"))
    capsys.readouterr()
    main(["solve", str(final), "hello", "--max-new-tokens", "30", "--no-colour"])
    assert capsys.readouterr().err.startswith("hello=")  # the prompt the task built, then the trace
    main(["eval", str(final), "--sizes", "3", "--samples", "2", "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["task"] == "reverse"


@pytest.mark.parametrize("name, message", [
    ("no_such_module:Task", r"task 'no_such_module:Task': cannot import no_such_module"),
    ("random:Random", r"task 'random:Random': random has no Task subclass named 'Random'"),
])
def test_a_task_import_path_that_names_no_task_says_so(name, message):
    with pytest.raises(ValueError, match=message):
        get_task(name)


def test_register_task_keeps_the_built_in_names(my_tasks):
    class Addition(my_tasks.ReverseTask):
        name = "addition"

    with pytest.raises(ValueError, match="'addition' is one of hf_toolssm's tasks"):
        register_task(Addition)
    with pytest.raises(TypeError, match="register_task takes a Task subclass"):
        register_task(object)
