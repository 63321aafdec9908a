"""The coding task and the code sandbox: generated codebases fail before and pass after the reference fix
(real runs, n = 4..30), the simulator predicts real Python exactly, both agents' traces replay through the
real sandbox into a passing codebase, the sandbox contains runaway and hostile programs (fork bomb,
infinite loop, 1 GB allocation, writes outside, network) and refuses path escapes and malformed commands,
a scripted model drives the tool loop through a fix, and mini-SWE-agent trajectories become segments.

Every run here is a real subprocess (~50 ms); the limit tests use a 1 s time limit.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scripted_model import ScriptedConfig, ScriptedModel

from hf_toolssm.evaluation import score_instances
from hf_toolssm.generation import generate_with_logits_processor, generate_with_tools
from hf_toolssm.tasks import get_task, replay
from hf_toolssm.tasks.coding import (
    BUG,
    VARIABLES,
    Fix,
    InteractiveCodingTask,
    SingleTurnCodingTask,
    checkout_codebase,
    codebase_for,
    random_codebase,
)
from hf_toolssm.tasks.coding_distillation import segments_from_mini_swe_agent
from hf_toolssm.tokenization import build_char_tokenizer
from hf_toolssm.tools import (
    ANS,
    ARG_END,
    CODE,
    EOS,
    OBS_CLOSE,
    OBS_OPEN,
    CodeSandbox,
    Role,
    ToolEnvironment,
    code_sandbox,
)
from hf_toolssm.tools.code_sandbox import output_hash, run_files, run_observation_text, status_line
from hf_toolssm.tools.sandbox_process import Confinement

TOKENIZER = build_char_tokenizer()
CONFINEMENT = CodeSandbox().confinement()
TASKS = {"single_turn": SingleTurnCodingTask(), "interactive": InteractiveCodingTask()}


def command(env: ToolEnvironment, text: str) -> str:
    """Generate ``[code] text [/cmd]``; return the observation as text."""
    observation = []
    for token in [CODE, *text, ARG_END]:
        observation += env.step(token)
    return "".join(observation)


def sandbox_env(files: dict[str, str], **options) -> ToolEnvironment:
    env = ToolEnvironment(tools=[CodeSandbox(files, **options)])
    env.reset(list("p\n"))
    return env


def obs(text: str) -> str:
    return f"{OBS_OPEN}{text}{OBS_CLOSE}"


def err(text: str) -> str:
    return f"{OBS_OPEN}[ERR]{text}{OBS_CLOSE}"


# --- the generator ----------------------------------------------------------------------------------------
def test_codebases_have_the_papers_shape():
    rng = random.Random(0)
    for size in [2, 3, *range(4, 31), 60, 200]:
        codebase = random_codebase(rng, size)
        names = [function.name for function in codebase.functions]
        assert len(set(names)) == size and names[0] == "main" and names[-1] == "foo"
        assert all(name[0] == "f" and 0 <= int(name[1:]) < 1000 for name in names[1:-1])
        parents = {name: [f.name for f in codebase.functions if name in f.children] for name in names}
        assert all(1 <= len(parents[name]) <= 2 for name in names[1:]) and not parents["main"]
        assert all(
            names.index(p) < names.index(name) for name in names for p in parents[name]
        )  # grown in order
        assert not codebase["foo"].children
        files = codebase.files()
        assert list(files) == sorted(files) and len(files) == size
        for function in codebase.functions:
            text = files[function.file]
            calls = [s.name for s in function.body if s.kind == "call"]
            assert calls == list(function.children)  # a parent imports and calls each child once
            assert text.count(" import ") == len(function.children)
            assert any(s.kind == "print" for s in function.body)
            assert set(function.params) <= {f"v{i}" for i in range(10)} and len(function.params) <= 2
            assert (BUG in text) == (function.name in ("main", "foo"))
        assert "    v10 = " in files["main.py"] and "print(v10)" in files["foo.py"]
        assert set("".join(files.values())) <= set(TOKENIZER.get_vocab())


def test_the_reference_fix_threads_v10_through_every_path_and_nothing_else():
    rng = random.Random(1)
    for size in range(2, 31):
        codebase = random_codebase(rng, size)
        fix = codebase.reference_fix()
        before, after = codebase.files(), codebase.files(fix)
        for name in before:
            for old, new in zip(before[name].split("\n"), after[name].split("\n"), strict=True):
                if old != new:  # only "v10" appended to a parameter or argument list
                    assert new in (old.replace("()", f"({BUG})"), old.replace(")", f", {BUG})"))
        # every path main -> foo is threaded: walk them all
        stack = ["main"]
        while stack:
            name = stack.pop()
            assert name == "main" or name in fix.params
            for child in codebase[name].children:
                if child in codebase.on_path:
                    assert (name, child) in fix.arguments
                    stack.append(child)
        assert "foo" in fix.params and "main" not in fix.params
        assert fix.params == codebase.on_path - {"main"}
        buggy, fixed = codebase.execute(), codebase.execute(fix)
        assert buggy.error == f"NameError: name '{BUG}' is not defined" and buggy.frames[-1][0] == "foo.py"
        assert fixed.error is None and fixed.output.startswith(
            buggy.output[: buggy.output.index("Traceback")]
        )


def test_every_codebase_fails_before_and_passes_after_the_reference_fix():
    """Real Python, n = 4..30, two seeds each; the simulator's predictions are exact, output included."""
    for size in range(4, 31):
        for seed in (1, 2):
            codebase = codebase_for(size, seed)
            for fix, returncode in ((Fix(), 1), (codebase.reference_fix(), 0)):
                result = run_files(codebase.files(fix))
                predicted = codebase.execute(fix)
                assert result.returncode == returncode == predicted.returncode, (size, seed)
                assert result.output.decode() == predicted.output, (size, seed)


def test_a_function_whose_children_take_all_ten_variables_declares_none_of_its_own():
    """Regression: the generator drew a variable of its own from an empty list (1 codebase in ~7,000 at
    n = 16 crashed a training run). These repositories did; they must build, fail, and pass after the fix."""
    for size, seed in ((16, 4737), (12, 42859), (14, 931)):
        codebase = codebase_for(size, seed)
        assert any(len(function.params) + sum(s.kind == "set" for s in function.body) >= len(VARIABLES)
                   for function in codebase.functions)
        assert codebase.execute().error is not None and codebase.execute(codebase.reference_fix()).error is None
        for agent in TASKS.values():
            assert replay(agent.instance(size, seed)).correct


# --- the agents -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agent", TASKS)
def test_agent_traces_replay_through_the_real_sandbox_into_a_passing_codebase(agent):
    task = TASKS[agent]
    for size, seed in ((2, 1), (4, 2), (8, 3), (16, 4), (30, 5)):
        instance = task.instance(size, seed)
        env = instance.environment()
        result = replay(instance, env)
        assert result.correct and task.check(instance, result.answer)
        assert result.answer == status_line(instance.metadata["expected_output"].encode(), 0)
        codebase = codebase_for(size, seed)
        assert env.tools[0].files() == codebase.files(codebase.reference_fix())  # the same fix, exactly
        assert task.check_files(instance, env.tools[0].files())


def runs_of(instance) -> list[list[str]]:
    """The argument text of every [code] command, grouped into rounds that end with a run."""
    text = "".join(
        t if r is Role.COMMAND else ("\x00" if t == OBS_OPEN else "")
        for t, r in zip(instance.full_tokens(), instance.roles())
    )
    commands = [
        part.removeprefix(CODE).removesuffix(ARG_END) for part in text.split("\x00") if part.startswith(CODE)
    ]
    rounds, current = [], []
    for line in commands:
        current.append(line)
        if line == "run":
            rounds.append(current)
            current = []
    assert not current
    return rounds


def test_single_turn_agent_reads_everything_edits_everything_then_runs_once():
    task = TASKS["single_turn"]
    for size in (4, 12):
        instance = task.instance(size, 7)
        (round_,) = runs_of(instance)
        assert round_[0] == "cat *" and round_[-1] == "run"
        assert all(line.startswith("replace ") for line in round_[1:-1])
        assert "".join(instance.trace.tokens).endswith(f"{ANS}{instance.answer}{EOS}")
        assert Role.THOUGHT not in instance.roles()


@pytest.mark.parametrize("files_per_round", [1, 3])
def test_interactive_agent_fixes_at_most_k_files_between_runs(files_per_round):
    task = InteractiveCodingTask(files_per_round=files_per_round)
    rng = random.Random(8)
    for _ in range(40):
        instance = task.sample(rng, rng.randint(2, 30))
        rounds = runs_of(instance)
        assert rounds[0] == ["run"]
        for round_ in rounds[1:]:
            opened = [line.removeprefix("open ") for line in round_ if line.startswith("open ")]
            assert 1 <= len(opened) <= files_per_round
            assert round_[0].startswith("open ")  # every file is opened right before it is edited
            assert all(line.startswith(("open ", "edit ")) for line in round_[:-1])
        if files_per_round == 1:  # every file and line opened is the last frame of the run just before
            last_run = None
            for line, observation in exchanges(instance):
                if line == "run":
                    last_run = observation
                elif line.startswith("open "):
                    assert line == "open " + last_run.split("\n")[-3].strip()
        assert instance.metadata["expected_output"]  # and it ends passing: replayed above
    assert replay(task.sample(rng, 12)).correct


def exchanges(instance) -> list[tuple[str, str]]:
    """(command line, observation text) of every ``[code]`` call of the trace, in order."""
    text = "".join(instance.trace.tokens)
    calls = re.findall(
        re.escape(CODE) + "(.*?)" + re.escape(ARG_END + OBS_OPEN) + "(.*?)" + re.escape(OBS_CLOSE),
        text,
        re.DOTALL,
    )
    assert len(calls) == text.count(CODE)
    return calls


def test_check_needs_the_fixed_output():
    task = TASKS["interactive"]
    instance = task.instance(6, 3)
    codebase = codebase_for(6, 3)
    buggy = codebase.execute()
    assert not task.check(instance, status_line(buggy.output.encode(), 1))
    assert not task.check(instance, "exit 0 hash 00000000")
    fixed = codebase.files(codebase.reference_fix())
    assert task.check_files(instance, fixed) and not task.check_files(instance, codebase.files())
    tampered = dict(fixed, **{"main.py": fixed["main.py"].replace("main()\n", "main()\nprint(0)\n")})
    assert not task.check_files(instance, tampered)  # passes, but prints something else
    failing = dict(fixed, **{"main.py": fixed["main.py"] + "raise SystemExit(1)\n"})
    assert not task.check_files(instance, failing)  # prints the right output, then exits 1


def test_a_run_observation_keeps_the_outputs_tail_and_hashes_all_of_it():
    """The tail holds the traceback the interactive agent reads; the hash is the whole output's, as the answer
    check computes it."""
    output = b"x" * 5000 + b"\nTraceback (most recent call last):\nNameError: name 'v10' is not defined\n"
    text = run_observation_text(output, 1, max_output_chars=4000)
    cut = len(output) - 4000
    assert text.startswith(f"... ({cut} characters cut)\n")
    assert text.endswith(f"NameError: name 'v10' is not defined\nexit 1 hash {output_hash(output)}")
    assert text == f"... ({cut} characters cut)\n" + output.decode()[-4000:] + status_line(output, 1)


def test_trace_lengths_in_tokens():
    """Tokens per trace (prompt included) with the character tokenizer, at the paper's sizes."""
    lengths = {}
    for agent, task in TASKS.items():
        for size in (4, 8, 16, 20, 24, 30):
            rng = random.Random(f"lengths:{size}")
            samples = [len(task.sample(rng, size)) for _ in range(50)]
            lengths[agent, size] = (statistics.mean(samples), max(samples))
            print(
                f"{agent:12s} n={size:2d}: mean {lengths[agent, size][0]:6.0f}  max {lengths[agent, size][1]:6d}"
            )
    for agent in TASKS:  # the paper trains at n <= 16 with 8,192-token contexts
        assert lengths[agent, 16][0] < 5000 and lengths[agent, 4][0] < lengths[agent, 30][0]
    instance = TASKS["interactive"].instance(16, 1)
    ids = TOKENIZER.convert_tokens_to_ids(instance.full_tokens())
    assert TOKENIZER.unk_token_id not in ids and len(ids) == len(instance)


def test_prompt_names_the_repository_and_checkout_builds_it():
    task = TASKS["single_turn"]
    instance = task.instance(12, 5)
    assert "".join(instance.prompt) == "repo 12-5\nfix: pass v10 from main to foo\n"
    assert checkout_codebase("repo 12-5") == codebase_for(12, 5).files()
    assert task.prompt_from_text("12-5") == task.prompt_from_text("repo 12-5") == instance.prompt
    assert task.prompt_from_text("".join(instance.prompt)) == instance.prompt  # the whole prompt, pasted
    for bad in ("repo 1-5", "repo 12", "12-5", "repo 9999-1"):
        with pytest.raises(ValueError):
            checkout_codebase(bad)
    with pytest.raises(ValueError, match="coding_single_turn"):
        task.prompt_from_text("twelve")
    env = task.make_environment()
    env.reset(list("hello\n"))
    assert command(env, "ls") == err("no codebase: the prompt names no repository")
    env.reset(instance.prompt)
    assert command(env, "ls") == obs("\n".join(codebase_for(12, 5).files()))


def test_sampling_is_deterministic_and_training_sizes_cover_4_to_16():
    task = TASKS["interactive"]
    first = [task.sample_train(random.Random(3)).full_tokens() for _ in range(2)]
    assert first[0] == first[1]
    sizes = {task.sample_train(random.Random(seed)).size for seed in range(300)}
    assert sizes == set(range(4, 17))
    assert get_task("coding_interactive", files_per_round=2).files_per_round == 2
    with pytest.raises(ValueError, match="files_per_round is the most files fixed between two runs"):
        get_task("coding_interactive", files_per_round=0)


# --- the sandbox: commands ------------------------------------------------------------------------------
FILES = {
    "main.py": "from foo import foo\ndef main():\n    foo()\nmain()\n",
    "foo.py": "def foo():\n    print(1)\n",
}


def test_sandbox_commands():
    env = sandbox_env(FILES)
    assert command(env, "ls") == obs("foo.py\nmain.py")
    assert command(env, "cat foo.py") == obs("1:def foo():\n2:    print(1)")
    assert command(env, "cat *") == obs(
        "==> foo.py <==\n1:def foo():\n2:    print(1)\n==> main.py <==\n"
        "1:from foo import foo\n2:def main():\n3:    foo()\n4:main()"
    )
    assert command(env, "cat main.py foo.py").startswith(obs("==> main.py <==")[:-6])
    assert command(env, "run") == obs("1\nexit 0 hash " + output_hash(b"1\n"))
    assert command(env, "replace foo.py 2     print(2)\n    print(3)") == obs("")
    assert command(env, "cat foo.py") == obs("1:def foo():\n2:    print(2)\n3:    print(3)")
    assert command(env, "run") == obs("2\n3\nexit 0 hash " + output_hash(b"2\n3\n"))
    assert command(env, "replace foo.py 3 ") == obs("")  # an empty line
    assert env.tools[0].files()["foo.py"] == "def foo():\n    print(2)\n\n"
    assert env.roles.count(Role.OBSERVATION) > 0 and env.memory.tokens == list("p\n")  # nothing stored


def test_open_marks_the_frame_line_and_edit_changes_the_open_file():
    env = sandbox_env(FILES)
    assert command(env, "edit 1 x") == err("no open file: open FILE first")
    assert command(env, "open main.py:3") == obs(
        "1:from foo import foo\n2:def main():\n3>    foo()\n4:main()"
    )
    assert command(env, "open foo.py") == obs("1:def foo():\n2:    print(1)")
    assert command(env, "edit 2     print(2)") == obs("")  # edits foo.py, the file opened last
    assert command(env, "open nope.py") == err("no such file nope.py")  # a failed open keeps foo.py open
    assert command(env, "edit 1 def foo(v10):") == obs("")
    assert env.tools[0].files() == {"main.py": FILES["main.py"], "foo.py": "def foo(v10):\n    print(2)\n"}
    env.reset(["p"])  # a new sequence opens nothing
    assert command(env, "edit 1 x") == err("no open file: open FILE first")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty command"),
        (" ls", "command must not start with a space"),
        ("rm -rf /", "unknown command rm; commands: ls, cat, replace, open, edit, run"),
        ("ls -la", "usage: ls"),
        ("run main.py", "usage: run"),
        ("cat", "usage: cat FILE... or cat *"),
        ("cat  foo.py", "usage: cat FILE... or cat *"),
        ("cat nope.py", "no such file nope.py"),
        ("cat ../foo.py", "bad file name ../foo.py"),
        ("cat /etc/passwd", "bad file name /etc/passwd"),
        ("cat ..", "bad file name .."),
        ("cat .bashrc", "bad file name .bashrc"),
        ("cat a/b.py", "bad file name a/b.py"),
        ("cat ~", "bad file name ~"),
        ("replace foo.py", "usage: replace FILE LINE TEXT"),
        ("replace foo.py 1", "usage: replace FILE LINE TEXT"),
        ("replace foo.py one x", "bad line number one"),
        ("replace foo.py -1 x", "bad line number -1"),
        ("replace foo.py ² x", "bad line number ²"),
        ("replace foo.py 0 x", "line 0 out of range 1..2"),
        ("replace foo.py 3 x", "line 3 out of range 1..2"),
        ("replace ../../etc/passwd 1 x", "bad file name ../../etc/passwd"),
        ("replace new.py 1 x", "no such file new.py"),
        ("open", "usage: open FILE or open FILE:LINE"),
        ("open :3", "usage: open FILE or open FILE:LINE"),
        ("open ../foo.py:1", "bad file name ../foo.py"),
        ("open foo.py:", "bad line number "),
        ("open foo.py:x", "bad line number x"),
        ("open foo.py:3", "line 3 out of range 1..2"),
        ("open foo.py:1:2", "bad line number 1:2"),
        ("edit 1", "usage: edit LINE TEXT"),
        ("edit 1 x", "no open file: open FILE first"),
    ],
)
def test_malformed_commands_get_an_error_observation(text, error):
    env = sandbox_env(FILES)
    assert command(env, text) == err(error)
    assert command(env, "cat foo.py") == obs("1:def foo():\n2:    print(1)")  # unchanged, still usable


def test_protocol_tokens_in_an_argument_and_over_long_arguments():
    env = sandbox_env(FILES)
    observation = [token for t in [CODE, "c", "a", "t", " ", ANS, ARG_END] for token in env.step(t)]
    assert "".join(observation) == err("argument must be plain characters")
    env = ToolEnvironment(tools=[CodeSandbox(FILES)], max_argument_tokens=8)
    env.reset(["p"])
    assert command(env, "replace foo.py 1 x").startswith(err("argument too long"))


def test_path_escapes_through_links_fifos_and_directories_are_refused(tmp_path):
    outside = tmp_path / "secret.py"
    outside.write_text("TOP-SECRET\n")
    program = (
        f"import os\nos.symlink({str(outside)!r}, 'link.py')\nos.symlink('/etc', 'etc.py')\n"
        "os.mkfifo('fifo.py')\nos.mkdir('dir.py')\nprint('made')\n"
    )
    env = sandbox_env({"main.py": program})
    assert command(env, "run").startswith(obs("made\nexit 0")[:-6])
    workspace = Path(env.tools[0].workspace().path)
    if outside.stat().st_dev == workspace.stat().st_dev:  # a hard link to an outside file, planted for us
        os.link(outside, workspace / "hard.py")
        assert command(env, "cat hard.py") == err("not a regular file hard.py")
    for name in ("link.py", "etc.py", "fifo.py", "dir.py"):
        assert command(env, f"cat {name}") == err(f"not a regular file {name}")
        assert command(env, f"replace {name} 1 pwned") == err(f"not a regular file {name}")
    assert outside.read_text() == "TOP-SECRET\n"
    assert command(env, "ls").startswith(obs("dir.py/")[:-6])
    listing = command(env, "cat *")  # main.py alone: the rest is skipped, and cat * still answers
    assert listing.startswith(obs("==> main.py <==")[:-6]) and listing.count("==>") == 1 and "TOP-SECRET" not in listing
    assert set(env.tools[0].files()) == {"main.py"}


# --- the sandbox: runaway and hostile programs ---------------------------------------------------------------
def run_program(source: str, time_limit: float = 1.0) -> tuple[str, float, ToolEnvironment]:
    env = sandbox_env({"main.py": source}, time_limit=time_limit)
    started = time.monotonic()
    observation = command(env, "run")
    return observation, time.monotonic() - started, env


@pytest.mark.parametrize("wait", ["pidfd", "polling"])
def test_the_exit_wait_sees_the_exit_and_the_timeout_and_leaves_the_process_unreaped(wait):
    """run_script's wait (a pidfd, and its polling twin): True once the process exits, False when the timeout
    comes first; either way the process stays unreaped, so its process group id cannot be reused yet."""
    from hf_toolssm.tools import sandbox_process

    waiting = {"pidfd": sandbox_process._wait_unreaped, "polling": sandbox_process._poll_unreaped}[wait]
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    assert waiting(quick.pid, 10.0) is True
    assert os.waitid(os.P_PID, quick.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None  # exited, not reaped
    assert quick.wait() == 0
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = time.monotonic()
    assert waiting(slow.pid, 0.2) is False
    assert 0.15 < time.monotonic() - started < 5
    slow.kill()
    slow.wait()


def test_an_infinite_loop_times_out():
    observation, seconds, env = run_program("while True:\n    pass\n")
    assert observation == obs(f"timeout hash {output_hash(b'')}") and seconds < 2.0
    assert command(env, "ls") == obs("main.py")  # the decode goes on


def test_a_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    observation, seconds, env = run_program(bomb)
    assert observation.startswith(obs("timeout")[:-6]) and seconds < 3.0
    if CONFINEMENT.user is None:
        pytest.skip(f"processes are not counted when the program runs as root ({CONFINEMENT.describe()})")
    counting = (
        "import os, time\ncount = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    count += 1\nprint(count)\n"
    )
    observation, seconds, _ = run_program(counting)
    forked = int(observation.removeprefix(OBS_OPEN).split("\n")[0])
    assert forked < env.tools[0].limits.max_processes and seconds < 2.0  # RLIMIT_NPROC, and nobody waited


def test_processes_are_counted_per_run_not_per_user():
    """With a cgroup per run, one run holding its whole process budget leaves another run's forks alone (the
    shared RLIMIT_NPROC of the user nobody would make them fail)."""
    if CONFINEMENT.cgroups is None:
        pytest.skip(f"no cgroup per run here ({CONFINEMENT.describe()})")
    holder = (
        "import os, time\nheld = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(1.5)\n        os._exit(0)\n    held += 1\nprint(held)\n"
        "time.sleep(1.5)\n"
    )
    forker = (
        "import os, time\ntime.sleep(0.5)\nforked = 0\nfor _ in range(8):\n    if os.fork() == 0:\n"
        "        os._exit(0)\n    forked += 1\nprint(forked)\n"
    )
    with ThreadPoolExecutor(2) as pool:  # as the fast tool loop runs two rows' programs
        held, forked = pool.map(lambda source: run_program(source, time_limit=3.0)[0], [holder, forker])
    most = f"{CodeSandbox().limits.max_processes - 1}\n"  # the program's own process counts too
    assert held == obs(f"{most}exit 0 hash {output_hash(most.encode())}")
    eight = "8\n"
    assert forked == obs(f"{eight}exit 0 hash {output_hash(eight.encode())}")


def test_memory_is_counted_for_the_whole_run():
    """RLIMIT_AS caps each process; the run's cgroup caps them together: four children of 150 MiB each (each
    under its own limit) do not all fit in the run's 256 MiB, and the kernel kills the ones that do not."""
    if CONFINEMENT.cgroups is None:
        pytest.skip(f"no cgroup per run here ({CONFINEMENT.describe()})")
    program = (
        "import os, time\nchildren = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
        "        x = bytearray(150 * 2**20)\n        time.sleep(0.5)\n        os._exit(0)\n    children.append(pid)\n"
        "for pid in children:\n    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    observation, seconds, env = run_program(program, time_limit=3.0)
    statuses = observation.removeprefix(OBS_OPEN).split("\n")[:4]
    assert statuses.count("-9") >= 2 and set(statuses) <= {"0", "-9"} and seconds < 3.0
    assert command(env, "ls") == obs("main.py")  # the decode goes on


@pytest.mark.parametrize("level", ["strongest", "cgroup_without_namespaces"])
def test_no_process_outlives_its_run(level, monkeypatch):
    """A PID namespace takes every process down with the program; without one the run's cgroup is emptied."""
    if level == "cgroup_without_namespaces":
        if CONFINEMENT.cgroups is None:
            pytest.skip(f"no cgroup per run here ({CONFINEMENT.describe()})")
        confinement = Confinement(False, False, CONFINEMENT.user, CONFINEMENT.python, CONFINEMENT.cgroups)
        monkeypatch.setattr(code_sandbox, "detect_confinement", lambda python=None: confinement)
    elif not (CONFINEMENT.namespaces or CONFINEMENT.cgroups):
        pytest.skip(f"no PID namespace or cgroup here ({CONFINEMENT.describe()}): a daemonized child survives")
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n"
        "    open('alive', 'w').write('yes')\n    os._exit(0)\nprint('parent done')\n"
    )
    observation, _, env = run_program(program)
    assert observation.startswith(obs("parent done\nexit 0")[:-6])
    time.sleep(0.6)
    assert command(env, "ls") == obs("main.py")  # the child died with the run


def test_a_program_that_leaves_its_process_group_dies_at_the_time_limit_without_a_cgroup(monkeypatch):
    """The script is its PID namespace's init; after os.setsid() the process-group kill misses it, so the
    namespace is killed through its init from outside (the cgroup, where there is one, also empties it)."""
    if not CONFINEMENT.namespaces:
        pytest.skip(f"no PID namespace here ({CONFINEMENT.describe()})")
    confinement = dataclasses.replace(CONFINEMENT, cgroups=None)
    monkeypatch.setattr(code_sandbox, "detect_confinement", lambda python=None: confinement)
    program = "import os, time\nos.setsid()\nwhile True:\n    open('alive', 'a').write('x')\n    time.sleep(0.05)\n"
    observation, _, env = run_program(program, time_limit=0.5)
    assert observation.startswith(obs("timeout")[:-6])
    alive = Path(env.tools[0].workspace().path, "alive")
    written = alive.stat().st_size
    time.sleep(0.4)
    assert alive.stat().st_size == written  # no longer writing


def test_a_1_gb_allocation_fails_inside_the_program():
    observation, seconds, _ = run_program("x = bytearray(10**9)\nprint('allocated')\n")
    assert observation.startswith(
        obs("Traceback (most recent call last):\n  main.py:1\nMemoryError\nexit 1")[:-6]
    )
    assert seconds < 2.0


def test_a_file_over_256_kib_and_a_65th_open_file_fail_inside_the_program():
    big, _, env = run_program("open('big.bin', 'wb').write(b'x' * 300_000)\n")
    assert "OSError: [Errno 27] File too large" in big and "exit 1" in big  # RLIMIT_FSIZE: EFBIG
    assert os.path.getsize(Path(env.tools[0].workspace().path, "big.bin")) == 256 * 1024
    files, _, _ = run_program("handles = [open('main.py') for _ in range(100)]\n")
    assert "OSError: [Errno 24] Too many open files" in files  # RLIMIT_NOFILE: EMFILE


def test_runaway_recursion_and_crashes_end_the_run():
    observation, _, _ = run_program("def f(n):\n    return f(n + 1)\nf(0)\n")
    assert "  main.py:2\n  main.py:2\n  main.py:2\n  [Previous line repeated " in observation
    assert "RecursionError: maximum recursion depth exceeded\nexit 1 hash " in observation
    observation, _, _ = run_program("import ctypes\nctypes.string_at(0)\n")
    assert observation == obs(f"signal 11 hash {output_hash(b'')}")
    observation, _, _ = run_program("def f(:\n")
    assert observation.startswith(obs("Traceback (most recent call last):\n  main.py:1\nSyntaxError: ")[:-6])


def test_the_program_runs_as_main_with_its_directory_importable():
    """The runner runs main.py as python would (it replaced runpy.run_path): __name__ is "__main__", __file__ its
    path, sibling modules import, and a traceback lists their frames by relative path."""
    files = {
        "main.py": "import os\nfrom foo import foo\nprint(__name__, os.path.basename(__file__))\n"
                   "if __name__ == '__main__':\n    foo(0)\n",
        "foo.py": "def foo(x):\n    return 1 // x\n",
    }
    env = sandbox_env(files)
    output = "__main__ main.py\nTraceback (most recent call last):\n  main.py:5\n  foo.py:2\n"
    output += "ZeroDivisionError: integer division or modulo by zero\n"
    assert command(env, "run") == obs(f"{output}exit 1 hash {output_hash(output.encode())}")


def test_huge_output_is_capped():
    observation, seconds, env = run_program("while True:\n    print('x' * 1000)\n")
    limit = env.tools[0].max_output_chars
    assert observation.startswith(obs("... (")[:-6]) and " characters cut)\n" in observation
    assert len(observation) < limit + 200 and seconds < 2.0


def test_writes_outside_the_sandbox_fail():
    target = Path("/tmp") / f"hf_toolssm_escape_{uuid.uuid4().hex}"
    program = (
        f"import os\nfor path in [{str(target)!r}, '../escape', '/work/escape', os.path.expanduser('~/escape')]:\n"
        "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
        "    except OSError as error:\n        print('refused', error.errno)\n"
        "open('inside.txt', 'w').write('ok')\n"
    )
    if not CONFINEMENT.read_only:
        pytest.skip(f"the file system is writable here ({CONFINEMENT.describe()})")
    observation, _, env = run_program(program)
    assert "wrote" not in observation and observation.count("refused") == 4
    assert not target.exists() and not (Path(env.tools[0].workspace().base) / "escape").exists()
    assert "inside.txt" in command(env, "ls")  # the sandbox itself is writable


def test_the_network_is_unreachable():
    if not CONFINEMENT.namespaces:
        pytest.skip(f"no network namespace here ({CONFINEMENT.describe()})")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\nprint('connected')\n"
        observation, _, _ = run_program(program)
        assert "connected" not in observation and "OSError: [Errno 101] Network is unreachable" in observation
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked


def test_the_program_sees_a_clean_environment_and_no_privileges():
    program = "import os, sys\nprint(sorted(os.environ))\nprint(os.getuid())\nprint(sys.flags.isolated)\n"
    observation, _, _ = run_program(program)
    lines = observation.removeprefix(OBS_OPEN).split("\n")
    assert lines[0] == "['HOME', 'LANG', 'LC_ALL', 'PATH']" and lines[2] == "1"
    if CONFINEMENT.user is not None:
        assert lines[1] == str(CONFINEMENT.user[0])
    print("confinement:", CONFINEMENT.describe())


WEAKER_LEVELS = {
    "no_namespaces": Confinement(False, False, CONFINEMENT.user, CONFINEMENT.python),
    "bare": Confinement(False, False, None, os.path.realpath(sys.executable)),
}


@pytest.mark.parametrize("level", WEAKER_LEVELS)
def test_weaker_confinement_levels_still_run_the_task_and_stop_runaways(level, monkeypatch):
    """What a machine without root or unshare falls back to: traces still replay, loops still stop."""
    confinement = WEAKER_LEVELS[level]
    monkeypatch.setattr(code_sandbox, "detect_confinement", lambda python=None: confinement)
    assert replay(TASKS["interactive"].instance(6, 2)).correct
    observation, seconds, env = run_program("while True:\n    pass\n")
    assert observation.startswith(obs("timeout")[:-6]) and seconds < 2.0
    assert env.tools[0].confinement() == confinement


def test_a_directory_nested_past_the_recursion_limit_is_removed_without_an_error():
    """shutil.rmtree recursed once per level before Python 3.12: 1,100 levels raised RecursionError out of the
    checker (run_files) and left the directory behind."""
    program = "import os\nfor _ in range(1100):\n    os.mkdir('d')\n    os.chdir('d')\nprint('deep')\n"
    result = code_sandbox.run_files({"main.py": program})
    assert result.output == b"deep\n" and result.returncode == 0
    _, _, env = run_program(program)
    base = env.tools[0].workspace().base
    env.reset(["q"])
    assert not os.path.exists(base)


def test_a_run_that_fills_the_disk_has_the_directory_put_back():
    """Each file is capped by RLIMIT_FSIZE, their number is not: the directory is checked after each run."""
    program = (
        "open('main.py', 'a').write('# grew\\n')\n"
        "for i in range(100):\n    open(f'junk{i}.bin', 'wb').write(b'x' * 200_000)\n"
        "print('filled')\n"
    )
    env = sandbox_env({"main.py": program, "keep.py": "x = 1\n"})
    observation = command(env, "run")
    assert observation.startswith(obs("filled\nexit 0")[:-6])
    assert observation.endswith("[the run left over 16 MiB or 1,000 entries: the files are back as before it]"
                                + OBS_CLOSE)
    assert env.tools[0].files() == {"main.py": program, "keep.py": "x = 1\n"}  # main.py's growth undone too
    many = "for i in range(1200):\n    open(f'e{i}', 'w').close()\n"
    env = sandbox_env({"main.py": many})
    assert "the files are back as before it" in command(env, "run") and command(env, "ls") == obs("main.py")
    small = "open('out.txt', 'w').write('result')\n"
    env = sandbox_env({"main.py": small})
    assert "back as before" not in command(env, "run") and command(env, "ls") == obs("main.py\nout.txt")


def test_one_sandboxs_program_cannot_find_another_sandboxs_files():
    other = sandbox_env({"main.py": "print(1)\n", "secret.py": "TOKEN = 'b-row-secret'\n"})
    command(other, "ls")  # its directory exists
    snoop = (
        "import glob, tempfile\nfound = glob.glob(tempfile.gettempdir() + '/hf_toolssm_code_*/*/*')\n"
        "print(len(found), any('b-row-secret' in open(f).read() for f in found if f.endswith('.py')))\n"
    )
    observation, _, _ = run_program(snoop)
    if CONFINEMENT.user is not None:  # as the caller's own user it could list them: nothing to hide from itself
        assert observation.startswith(obs("0 False\nexit 0")[:-6])


def test_the_programs_own_hard_links_stay_readable_and_cat_star_skips_what_it_cannot_show():
    program = "import os\nos.link('main.py', 'backup.py')\nopen('big.py', 'w').write('#' * 70_000)\nprint('ok')\n"
    env = sandbox_env({"main.py": program})
    assert command(env, "run").startswith(obs("ok\nexit 0")[:-6])
    assert command(env, "cat main.py").startswith(obs("1:import os")[:-6])  # two links, both in the sandbox
    assert command(env, "replace main.py 2 pass") == obs("")
    listing = command(env, "cat *")
    assert "==> backup.py <==" in listing and "==> big.py" not in listing  # over max_file_bytes: skipped
    assert command(env, "cat big.py") == err("file too large big.py")


def test_edge_cases_of_the_file_commands():
    env = sandbox_env({"main.py": "", "a.py": "x\n"})
    assert command(env, "replace main.py 1 print(2)") == obs("")  # an empty file has a line 1
    assert env.tools[0].files()["main.py"] == "print(2)"
    assert command(env, "run").startswith(obs("2\nexit 0")[:-6])
    tool = env.tools[0]
    surrogate = tool.run("[code]", list("replace a.py 1 \ud800"), env.memory)
    assert "".join(surrogate) == err("text for a.py is not valid unicode")
    names = "import os\nos.mkdir('a_dir')\nopen('new\\nline.py', 'w').close()\n"
    names += "for i in range(250):\n    open(f'f{i:03}', 'w').close()\n"
    env = sandbox_env({"main.py": names})
    command(env, "run")
    listing = command(env, "ls").removeprefix(OBS_OPEN).removesuffix(OBS_CLOSE).split("\n")
    assert len(listing) == 201 and listing[-1] == "... and 52 more" and "new" not in " ".join(listing)
    assert listing[0] == "a_dir/"  # sorted, directories marked


def test_an_exception_whose_str_raises_still_gets_its_traceback():
    program = "class Odd(Exception):\n    def __str__(self):\n        raise ValueError\nraise Odd()\n"
    observation, _, _ = run_program(program)
    assert observation.startswith(obs("Traceback (most recent call last):\n  main.py:4\n__main__.Odd\nexit 1")[:-6])


def test_directories_a_killed_process_left_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    orphan, young, alive = (tmp_path / f"hf_toolssm_code_{dead.pid}_x", tmp_path / f"hf_toolssm_code_{dead.pid}_y",
                            tmp_path / f"hf_toolssm_code_{os.getppid()}_z")
    for folder in (orphan, young, alive):
        (folder / "work_1").mkdir(parents=True)
    for folder in (orphan, alive):
        os.utime(folder, (time.time() - 7200, time.time() - 7200))
    code_sandbox.remove_orphaned_workspaces.__wrapped__()
    assert not orphan.exists() and young.exists() and alive.exists()  # young: maybe another namespace's live one


def test_workspaces_are_removed():
    env = sandbox_env(FILES)
    command(env, "ls")
    first = env.tools[0].workspace().base
    env.reset(["q"])  # a new sequence: the old directory goes, the next command makes a fresh one
    assert not os.path.exists(first)
    command(env, "replace foo.py 1 x")
    second = env.tools[0].workspace().base
    assert second != first and command(env, "cat foo.py") == obs("1:x\n2:    print(1)")
    env.reset(["q"])
    assert command(env, "cat foo.py") == obs("1:def foo():\n2:    print(1)")  # back to the initial files
    third = env.tools[0].workspace().base
    del env
    gc.collect()
    assert not os.path.exists(second) and not os.path.exists(third)


# --- a scripted model drives the tool loop ------------------------------------------------------------------
class RecordingFactory:
    def __init__(self, task):
        self.task, self.envs = task, []

    def __call__(self):
        self.envs.append(self.task.make_environment())
        return self.envs[-1]


def decode_generate(model, prompt, factory, max_new_tokens):
    """The stock ``model.generate()`` path, with the tools in a logits processor."""
    return generate_with_logits_processor(model, TOKENIZER, [prompt], factory, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize(
    ("agent", "path"),
    [("single_turn", "fast_loop"), ("interactive", "fast_loop"), ("interactive", "generate")],
)
def test_a_scripted_model_fixes_the_code_through_the_tool_loop(agent, path):
    """The model's side of the reference trace, decoded with the real sandbox in the loop: the sandbox must
    answer every command as the trace predicts, and the codebase it ends with passes the checker."""
    task = TASKS[agent]
    instance = task.instance(5, 11)
    config = ScriptedConfig(
        vocab_size=len(TOKENIZER), traces=[TOKENIZER.convert_tokens_to_ids(instance.full_tokens())],
        off_trace_id=TOKENIZER.unk_token_id, pad_token_id=TOKENIZER.pad_token_id, eos_token_id=TOKENIZER.eos_token_id,
    )  # fmt: skip
    model, factory = ScriptedModel(config).eval(), RecordingFactory(task)
    if path == "fast_loop":
        (result,) = generate_with_tools(model, TOKENIZER, [instance.prompt], factory, progress=False)
    else:
        (result,) = decode_generate(model, instance.prompt, factory, max_new_tokens=len(instance) + 10)
    assert result.tokens == instance.full_tokens() and result.roles == instance.roles()
    assert task.check(instance, result.answer)
    assert task.check_files(instance, factory.envs[0].tools[0].files())


def test_only_a_run_blocks_the_decode():
    """``run`` starts a program, so the fast tool loop runs it on a tool thread; the file commands run in line."""
    for command, blocks in (("run", True), ("ls", False), ("cat main.py", False), ("runs", False)):
        env = TASKS["interactive"].make_environment()
        env.reset(list("x\n"))
        for token in ["[code]", *command]:
            assert not env.blocks_on(token)
            env.step(token)
        assert env.blocks_on("[/cmd]") is blocks


def test_a_batch_of_scripted_fixes_runs_its_programs_on_tool_threads(monkeypatch):
    """Four codebases decoded side by side with the fast loop's defaults: every program runs on a tool thread while
    the other rows decode, and every trace still comes out as its reference, every codebase fixed."""
    from hf_toolssm.tools import code_sandbox

    threads, run_script = [], code_sandbox.run_script
    monkeypatch.setattr(code_sandbox, "run_script",
                        lambda *args: threads.append(threading.current_thread().name) or run_script(*args))
    task = TASKS["interactive"]
    instances = [task.instance(n, 20 + n) for n in (4, 5, 6, 7)]
    config = ScriptedConfig(
        vocab_size=len(TOKENIZER), traces=[TOKENIZER.convert_tokens_to_ids(i.full_tokens()) for i in instances],
        off_trace_id=TOKENIZER.unk_token_id, pad_token_id=TOKENIZER.pad_token_id, eos_token_id=TOKENIZER.eos_token_id,
    )  # fmt: skip
    factory = RecordingFactory(task)
    results = generate_with_tools(ScriptedModel(config).eval(), TOKENIZER, [i.prompt for i in instances], factory,
                                  progress=False, tool_threads=2)  # fmt: skip
    assert len(threads) >= 8 and all(name.startswith("tool") for name in threads)
    for instance, result, env in zip(instances, results, factory.envs, strict=True):
        assert result.tokens == instance.full_tokens() and result.roles == instance.roles()
        assert task.check_files(instance, env.tools[0].files())


def test_the_pass_rate_judges_the_files_the_decode_left_not_the_answer():
    """A decode that fixes the code but miscopies the status line's hash passes; one that writes the right
    status line without touching the code does not. The answer check says the opposite of both."""
    task = TASKS["interactive"]
    fixed_code, no_fix = task.instance(5, 11), task.instance(5, 12)
    miscopied = fixed_code.full_tokens()
    assert miscopied[-1] == "[EOS]" and fixed_code.answer.endswith(miscopied[-2])
    miscopied[-2] = "0" if miscopied[-2] != "0" else "1"  # the hash's last hex digit
    answer_only = [*no_fix.prompt, "[ANS]", *no_fix.answer, "[EOS]"]
    config = ScriptedConfig(
        vocab_size=len(TOKENIZER), traces=[TOKENIZER.convert_tokens_to_ids(t) for t in (miscopied, answer_only)],
        off_trace_id=TOKENIZER.unk_token_id, pad_token_id=TOKENIZER.pad_token_id, eos_token_id=TOKENIZER.eos_token_id,
    )  # fmt: skip
    model = ScriptedModel(config).eval()
    results = generate_with_tools(
        model, TOKENIZER, [fixed_code.prompt, no_fix.prompt], task.make_environment, progress=False
    )
    assert [r.tokens for r in results] == [miscopied, answer_only]
    assert [task.check(inst, r.answer) for inst, r in zip((fixed_code, no_fix), results)] == [False, True]
    assert [task.check_final_state(inst, r.tools) for inst, r in zip((fixed_code, no_fix), results)] == [True, False]

    scores, _ = score_instances(model, TOKENIZER, task, [fixed_code, no_fix], size=5, token_accuracy=False,
                                progress=False)  # fmt: skip
    assert scores.answer_exact_match == 0.5 and scores.pass_rate == 0.5
    addition = get_task("addition")
    scores, _ = score_instances(model, TOKENIZER, addition, [addition.instance("1", "2")], size=1,
                                token_accuracy=False, progress=False)  # fmt: skip
    assert scores.pass_rate is None  # judged by the answer alone


# --- distillation ---------------------------------------------------------------------------------------------
def test_mini_swe_agent_trajectories_become_segments():
    text_format = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Pass v10 from main to foo.\t"},
            {"role": "assistant", "content": "THOUGHT: run it.\n\n```bash\npython main.py\n```"},
            {"role": "user", "content": "<returncode>1</returncode>\n<output>\nNameError\n</output>"},
            {"role": "assistant", "content": "two blocks ```bash\nls\n``` ```bash\nls\n```"},
            {"role": "user", "content": "Please always provide EXACTLY ONE action."},
            {
                "role": "assistant",
                "content": "THOUGHT: done.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```",
            },
        ]
    }
    segments = segments_from_mini_swe_agent(text_format, answer="ok")
    assert [(s.role, "".join(s.tokens)) for s in segments] == [
        (Role.PROMPT, "Pass v10 from main to foo.  "),  # the tab, expanded
        (Role.THOUGHT, "THOUGHT: run it.\n"),
        (Role.COMMAND, f"{CODE}python main.py{ARG_END}"),
        (Role.OBSERVATION, obs("<returncode>1</returncode>\n<output>\nNameError\n</output>")),
        (Role.THOUGHT, "THOUGHT: done.\n"),
        (Role.OUTPUT, f"{ANS}ok{EOS}"),
    ]
    tool_calls = {
        "messages": [
            {"role": "user", "content": "task"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"arguments": '{"command": "cat foo.py"}'}}],
            },
            {"role": "tool", "content": "def foo():"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"arguments": {"command": "echo MINI_SWE_AGENT_FINAL_OUTPUT"}}}],
            },
        ]
    }
    roles = [s.role for s in segments_from_mini_swe_agent(tool_calls, prompt="repo 4-1\n")]
    assert roles == [Role.PROMPT, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT]
    with pytest.raises(ValueError, match="never submits"):
        segments_from_mini_swe_agent({"messages": text_format["messages"][:4]})
