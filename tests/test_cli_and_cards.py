"""The CLI's contracts, the evaluation JSON, model cards and the trust_remote_code path."""

import importlib.util
import io
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import venv
from pathlib import Path
from unittest import mock

import pytest
import torch

import hf_toolssm  # noqa: F401
from hf_toolssm.cli import build_parser, main
from hf_toolssm.model_card import export_remote_code, write_model_card
from hf_toolssm.tokenization import build_char_tokenizer
from hf_toolssm.training import TrainConfig, build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random ToolMamba addition checkpoint (untrained: the CLI must cope with any output)."""
    path = tmp_path_factory.mktemp("ckpt")
    tokenizer = build_char_tokenizer()
    config = TrainConfig(output_dir=str(path),
                         model_kwargs={"hidden_size": 32, "num_hidden_layers": 1, "state_size": 8})
    model = build_model(config, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("solve", "eval", "train", "bench", "card", "demo"):
        assert command in text
    for command in ("solve", "eval", "train", "bench", "card", "demo"):
        help_text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert len(help_text) > 200


def test_the_training_step_benchmark_cuts_the_batch_and_keeps_the_gradient():
    from hf_toolssm.benchmark import bench_train_step

    (report,) = bench_train_step(quick=True)["tasks"].values()
    whole, cut = report["micro_batch_tokens"]["None"], report["micro_batch_tokens"]["400"]
    assert whole["micro_batches"] == 1 and cut["micro_batches"] > 1
    assert report["real_tokens"] <= cut["padded_tokens"] < whole["padded_tokens"]
    assert cut["max_gradient_difference_relative"] < 1e-4 and cut["speedup_vs_whole_batch"] > 0


def test_the_short_chunk_benchmark_times_both_paths(checkpoint):
    """The benchmark that sets ToolMambaMixer.STEP_LOOP_MAX_LENGTH runs and reports a ratio per shape."""
    from hf_toolssm.benchmark import _bench_short_chunk

    report = _bench_short_chunk(str(checkpoint), forwards=2, lengths=(2, 5))
    shapes = [key for key in report if key.startswith("batch_")]
    assert shapes == ["batch_1_tokens_2", "batch_1_tokens_5", "batch_16_tokens_2", "batch_16_tokens_5"]
    assert all(report[key]["speedup_step_loop_vs_chunked"] > 0 for key in shapes)


def test_the_ragged_feed_benchmark_decodes_every_feed_alike(checkpoint):
    """The benchmark that sets the tool loop's RAGGED_MIN_FILL / RAGGED_MIN_WIDTH and measures its tool threads: same
    traces, forwards counted."""
    from hf_toolssm.benchmark import run_benchmarks

    report = run_benchmarks("ragged", model_path=str(checkpoint), quick=True, size=4)["ragged_feed"]
    assert "instances of size 4" in report["what"]
    assert report["traces_identical"] is True and report["trace_tokens"] > 0
    assert report["forwards"]["ragged"] > 0 and report["forwards"]["in_step"] > 0
    assert report["speedup_ragged_vs_in_step"] > 0 and report["speedup_tool_threads_vs_inline"] > 0
    assert set(report["seconds"]) == {"ragged", "ragged_inline", "in_step"}


def test_bench_ragged_on_an_attention_checkpoint_says_what_it_is_for(tmp_path):
    model = build_model(TrainConfig(output_dir=str(tmp_path), task="addition", train_max_size=3, model_type="gpt_neox",
                                    model_kwargs={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 32}), build_char_tokenizer())
    model.save_pretrained(tmp_path)
    build_char_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(SystemExit, match="is a gpt_neox; the ragged feed is for recurrent models"):
        main(["bench", "ragged", "--model", str(tmp_path), "--out", str(tmp_path / "r.json")])


def test_the_sandbox_benchmark_runs_every_variant_of_the_runner():
    """`toolssm bench sandbox`: as shipped, with the polling wait, with runpy, with both, and without the run's
    cgroup where runs get one; each run prints its 1."""
    from hf_toolssm.benchmark import bench_sandbox
    from hf_toolssm.tools.sandbox_process import detect_confinement

    report = bench_sandbox(quick=True)
    variants = {"shipped", "polling_wait", "runpy_runner", "both_before"}
    if detect_confinement().cgroups is not None:
        variants.add("without_cgroup")
        assert report["cost_of_the_cgroup"] > 0
    assert set(report["seconds"]) == variants
    assert min(report["seconds"].values()) > 0 and report["speedup_shipped_vs_both_before"] > 0


@pytest.mark.parametrize("names_its_task_in", ["config.json", "train_config.yaml"])
def test_the_decode_benchmark_of_an_attention_baseline_compares_kv_caches(tmp_path, names_its_task_in):
    """Given a GPT-NeoX checkpoint, `toolssm bench decode` times generate() with the static KV cache against the
    dynamic one and against the fast tool loop (on in-place KV layers and on transformers' own), on the same
    prompts, and says whether the traces agree. An older checkpoint without tool_config in its config.json is
    read through the train_config.yaml beside it, as `toolssm eval` reads it."""
    from hf_toolssm.benchmark import bench_decode

    model = build_model(TrainConfig(output_dir=str(tmp_path), task="addition", train_max_size=3, model_type="gpt_neox",
                                    model_kwargs={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 32}), build_char_tokenizer())
    if names_its_task_in == "train_config.yaml":
        del model.config.tool_config
        (tmp_path / "train_config.yaml").write_text("task: addition\ntrain_max_size: 3\n")
    model.save_pretrained(tmp_path)
    build_char_tokenizer().save_pretrained(tmp_path)
    report = bench_decode(str(tmp_path), quick=True)["kv_cache"]
    assert report["model_type"] == "gpt_neox" and "addition instances of size 6" in report["what"]
    assert report["traces_identical"] is True and report["trace_tokens"] > 0
    assert report["traces_identical_fast_loop_vs_generate"] is True
    assert report["speedup_static_vs_dynamic_cache"] > 0 and report["speedup_fast_loop_vs_static_generate"] > 0
    assert report["speedup_growing_vs_dynamic_kv_layers_in_the_fast_loop"] > 0
    assert set(report["seconds"]) == {"static", "dynamic", "fast_loop", "fast_loop_dynamic_kv"}
    assert 0 <= report["observation_fraction"] <= 1


def test_the_harness_decodes_an_attention_baseline_as_generate_does(tmp_path):
    """`toolssm eval` decodes a GPT-NeoX through the fast loop, not generate(): row by row the same traces (one
    row at a time, so generate() pads nothing and both paths see the same positions). Traces with commands and
    observations: tests/test_generation.py::test_attention_models_with_the_logits_processor_and_the_fast_loop."""
    from hf_toolssm.evaluation import score_instances
    from hf_toolssm.generation import generate_with_logits_processor
    from hf_toolssm.tasks import get_task

    torch.manual_seed(0)
    model = build_model(TrainConfig(output_dir=str(tmp_path), task="addition", train_max_size=3, model_type="gpt_neox",
                                    model_kwargs={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 32, "initializer_range": 0.5}),
                        tokenizer := build_char_tokenizer()).eval()
    task = get_task("addition")
    instances = [task.sample(random.Random(row), 3) for row in range(3)]
    with mock.patch.object(type(model), "generate", side_effect=AssertionError("the harness called generate()")):
        result, decoded = score_instances(model, tokenizer, task, instances, size=3, batch_size=3,
                                          token_accuracy=False, progress=False)
    assert result.samples == 3 and result.mean_trace_tokens > 0
    for instance, fast in zip(instances, decoded):
        (slow,) = generate_with_logits_processor(model, tokenizer, [instance.prompt], task.make_environment,
                                                 max_new_tokens=len(fast.generated_tokens) + 64)
        assert fast.tokens == slow.tokens[: len(fast.tokens)]


def test_the_harness_keeps_first_use_costs_out_of_its_timing(tmp_path):
    """A model whose first forward is slow (ToolMamba compiling its CPU kernel on a fresh machine): score_instances
    pays that before its timer starts, so seconds and tokens/s describe the decode alone."""
    from hf_toolssm.evaluation import score_instances
    from hf_toolssm.tasks import get_task

    model = build_model(TrainConfig(output_dir=str(tmp_path), task="addition", train_max_size=3,
                                    model_kwargs={"hidden_size": 16, "num_hidden_layers": 1}),
                        tokenizer := build_char_tokenizer()).eval()
    task = get_task("addition")
    forward, calls = model.forward, []

    def slow_first_call(*args, **kwargs):
        calls.append(None)
        if len(calls) == 1:
            time.sleep(3)
        return forward(*args, **kwargs)

    with mock.patch.object(model, "forward", side_effect=slow_first_call):
        result, _ = score_instances(model, tokenizer, task, [task.sample(random.Random(0), 1)], size=1,
                                    token_accuracy=False, progress=False)
    assert len(calls) > 1 and result.seconds < 3


def test_solve_prints_the_answer_alone_as_the_last_stdout_line(checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "hf_toolssm.cli", "solve", str(checkpoint), "12+34", "--max-new-tokens", "60",
         "--no-colour"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert result.stderr.startswith("12+34=")  # the trace streams on stderr, prompt first
    assert "trace tokens" in result.stderr
    right = "[the answer is right]" in result.stderr  # an untrained model: judged against 12+34's reference
    assert right == (result.stdout.strip() == "46") and (right or "the reference answer: 46]" in result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) <= 1 and (result.returncode == 1) == (not (lines and lines[-1]))


def test_solve_on_a_coding_repository_says_whether_the_files_pass(checkpoint, capsys):
    """An untrained model fixes nothing: solve says so on stderr, beside the trace."""
    main(["solve", str(checkpoint), "4-7", "--task", "coding_interactive", "--max-new-tokens", "20", "--no-colour"])
    note, err = capsys.readouterr().err.split("\n", 1)
    assert note.endswith("was trained on addition, not coding_interactive")  # --task overrode it: said first
    assert err.startswith("repo 4-7\n") and "[the code is not fixed: main.py in the sandbox does not print" in err
    assert "[its answer, the status line of its last run, differs from the reference fix's: exit 0 hash " in err


def test_solve_reads_a_many_line_problem_from_stdin(checkpoint, capsys, monkeypatch):
    graph = "v7 = True\nv3 = False\nv12 = False\nv5 = v7 and not v3\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(graph))
    main(["solve", str(checkpoint), "-", "--task", "logical_graph", "--max-new-tokens", "20", "--no-colour"])
    err = capsys.readouterr().err.split("\n", 1)[1]  # after the note that the checkpoint was trained on addition
    assert err.startswith(graph) and "the reference answer: True]" in err


def test_solve_random_decodes_the_first_problem_that_eval_decodes_at_that_size(checkpoint, capsys):
    """`--random SIZE --seed S`: the first test instance of `toolssm eval --sizes SIZE --seed S`, so a size's score
    can be looked at one trace at a time; a problem and --random together, or neither, is a usage error."""
    from hf_toolssm.data import heldout_instances
    from hf_toolssm.tasks import get_task

    main(["solve", str(checkpoint), "--random", "7", "--seed", "3", "--max-new-tokens", "10", "--no-colour"])
    first = heldout_instances(get_task("addition"), 3, 7, 1)[0]
    err = capsys.readouterr().err
    assert err.startswith("".join(first.prompt)) and f"the reference answer: {first.answer}]" in err
    for argv, message in ((["1+1", "--random", "7"], "or --random SIZE, not both"), ([], r"PROBLEM \(e.g.")):
        with pytest.raises(SystemExit, match=message):
            main(["solve", str(checkpoint), *argv])
    main(["solve", str(checkpoint), "--random", "7", "--seed", "3", "--max-new-tokens", "10", "--quiet"])
    assert f"[problem: {''.join(first.prompt)}]" in capsys.readouterr().err  # no trace streamed: say which one
    with pytest.raises(SystemExit, match=r"hanoi_recursive: --random is the number of disks .* got 50"):
        main(["solve", str(checkpoint), "--random", "50", "--task", "hanoi_recursive"])


def _damaged_copy(checkpoint, tmp_path, damage):
    folder = tmp_path / damage
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    if damage == "not_json":
        (folder / "config.json").write_text("{'hidden_size': 32}")
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    else:  # a field lost: transformers would fill in its default
        del config[{"no_model_type": "model_type", "no_hidden_size": "hidden_size"}[damage]]
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("damage, message", [
    ("not_json", r"config.json is not valid JSON \(.*\); re-save the checkpoint with save_pretrained"),
    ("no_model_type", r"config.json names no model_type"),
    ("no_hidden_size", r"config.json does not fit the weights \(backbone.embeddings.weight is \(\d+, 32\) in the "
                       r"weights but \(\d+, 768\) from config.json\); a size field \(hidden_size, "),
    ("no_weights", r"holds no weights \(model.safetensors\)"),
])
@pytest.mark.parametrize("argv", [["solve", "{}", "1+1"], ["card", "{}"], ["demo", "--model", "{}"]])
def test_a_damaged_checkpoint_is_a_usage_error_that_names_the_damage(checkpoint, tmp_path, damage, message, argv):
    """Not transformers' tracebacks (a size mismatch report, advice to pass trust_remote_code=True), nor a model
    card that counts the parameters of a model built from config defaults."""
    folder = _damaged_copy(checkpoint, tmp_path, damage)
    with pytest.raises(SystemExit, match=f"toolssm {argv[0]}: .*{message}"):
        main([part.format(folder) for part in argv])


def test_a_damaged_init_from_checkpoint_is_named_before_training(checkpoint, tmp_path):
    from hf_toolssm.training import _initial_checkpoint

    folder = _damaged_copy(checkpoint, tmp_path, "no_hidden_size")
    with pytest.raises(ValueError, match=r"init_from: .*config.json does not fit the weights"):
        _initial_checkpoint(TrainConfig(output_dir=str(tmp_path / "run"), init_from=str(folder)),
                            build_char_tokenizer())


def test_an_unknown_option_is_reported_with_the_commands_own_usage(checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(["card", str(checkpoint), "--help-me"])
    err = capsys.readouterr().err
    assert err.startswith("usage: toolssm card") and "unrecognized arguments: --help-me" in err


@pytest.mark.parametrize("budget", ["-1", "0", "nan", "inf", "soon"])
def test_solve_rejects_a_time_budget_that_is_not_a_positive_number(checkpoint, budget, capsys):
    with pytest.raises(SystemExit):
        main(["solve", str(checkpoint), "1+1", "--time-budget", budget])
    assert f"argument --time-budget: expected a number > 0, got {budget!r}" in capsys.readouterr().err


def test_solve_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        main(["solve", str(tmp_path), "1+1"])


@pytest.mark.parametrize("command", ["solve", "eval"])
def test_an_unknown_task_is_a_usage_error_that_lists_the_known_ones(command, checkpoint):
    argv = {"solve": ["1+1"], "eval": ["--sizes", "5", "--out", "never.json"]}[command]
    with pytest.raises(SystemExit, match=f"toolssm {command}: unknown task 'nosuch'; known tasks: addition, "):
        main([command, str(checkpoint), *argv, "--task", "nosuch"])


@pytest.mark.parametrize("argv", [["demo", "--model"], ["card"], ["bench", "decode", "--model"]])
def test_every_command_that_loads_a_checkpoint_rejects_a_folder_that_is_not_one(argv, tmp_path):
    """Not from_pretrained's "Repo id must be in the form ..." about a typo in a local path."""
    with pytest.raises(SystemExit, match="not a checkpoint folder"):
        main([*argv, str(tmp_path / "typo")])


def test_demo_on_a_transformers_checkpoint_without_tool_config(tmp_path, capsys):
    """A config class of transformers' own has no tool_config attribute at all: the demo falls back to addition."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "neox")
    tokenizer.save_pretrained(tmp_path / "neox")
    assert main(["demo", "--model", str(tmp_path / "neox"), "--sizes", "1", "--samples", "1",
                 "--out", str(tmp_path / "out")]) in (0, 1)
    assert "trained on addition" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "demo_results.json").read_text())["task"] == "addition"


def test_solve_quiet_streams_nothing_of_the_trace_not_even_the_prompt(checkpoint, capsys):
    main(["solve", str(checkpoint), "12+34", "--quiet", "--max-new-tokens", "10", "--no-colour"])
    err = capsys.readouterr().err
    assert err.startswith("[10 trace tokens, ") and "12+34" not in err


def test_solve_stops_a_runaway_decode_at_twice_the_reference_trace(checkpoint, capsys):
    """Without --max-new-tokens a decode that never ends (this random model rarely says [EOS]) stops where
    toolssm eval would: twice the reference trace, not after millions of tokens."""
    from hf_toolssm.evaluation import decode_budget
    from hf_toolssm.tasks import get_task

    reference = get_task("addition").instance_from_text("12+34")
    budget = decode_budget(reference)
    assert budget == 2 * (len(reference.full_tokens()) - len(reference.prompt)) + 16
    main(["solve", str(checkpoint), "12+34", "--quiet", "--no-colour"])
    summary = capsys.readouterr().err.splitlines()[0]
    tokens = int(re.match(r"\[(\d+) trace tokens", summary).group(1))
    assert tokens <= budget and (tokens == budget or "stopped: max_tokens" not in summary)


def test_solve_rejects_a_malformed_problem(checkpoint):
    with pytest.raises(SystemExit, match=r"expected two positive integers .* got '12\*34'"):
        main(["solve", str(checkpoint), "12*34", "--quiet"])


@pytest.mark.parametrize("argv, message", [
    (["--samples", "0"], "--samples: expected a whole number >= 1, got '0'"),
    (["--sizes", "10,x"], "--sizes: expected comma-separated whole numbers >= 1"),
    (["--batch-size", "-3"], "--batch-size: expected a whole number >= 1"),
    (["--show-mistakes", "-1"], "--show-mistakes: expected a whole number >= 0, got '-1'"),
])
def test_eval_rejects_bad_numbers_with_a_usage_error(checkpoint, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(checkpoint), "--out", "unused.json", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_eval_rejects_a_size_the_task_has_no_instance_of_before_decoding_any(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match=r"toolssm eval: logical_graph: --sizes is the number of nodes .* got 3"):
        main(["eval", str(checkpoint), "--task", "logical_graph", "--sizes", "10,3", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def test_eval_writes_the_documented_json(checkpoint, tmp_path):
    out = tmp_path / "r.json"
    argv = ["eval", str(checkpoint), "--sizes", "2,3", "--samples", "3", "--seed", "7", "--out", str(out), "--plot",
            str(tmp_path / "r.png")]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert {"command", "machine", "date", "results"} <= set(payload)
    assert payload["command"] == "toolssm " + shlex.join(argv)  # the argv main() was given, not pytest's
    assert [r["size"] for r in payload["results"]] == [2, 3]
    for row in payload["results"]:
        assert row["samples"] == 3
        for key in ("answer_exact_match", "trace_exact_match", "token_accuracy"):
            assert 0.0 <= row[key] <= 1.0
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_an_interrupted_eval_keeps_its_finished_sizes_and_a_rerun_scores_only_the_rest(checkpoint, tmp_path, capsys):
    """Each size is saved to OUT.partial.json as it finishes; OUT.json appears only when the grid is done."""
    from hf_toolssm.evaluation import score_instances

    out = tmp_path / "r.json"
    argv = ["eval", str(checkpoint), "--sizes", "2,3", "--samples", "2", "--seed", "7", "--out", str(out)]
    scored_sizes = []

    def dies_at_size_3(*args, size, **kwargs):
        scored_sizes.append(size)
        if size == 3:
            raise KeyboardInterrupt
        return score_instances(*args, size=size, **kwargs)

    with mock.patch("hf_toolssm.evaluation.score_instances", dies_at_size_3), pytest.raises(KeyboardInterrupt):
        main(argv)
    partial = tmp_path / "r.partial.json"
    assert not out.exists() and [r["size"] for r in json.loads(partial.read_text())["results"]] == [2]
    first = json.loads(partial.read_text())["results"][0]

    scored_sizes.clear()
    with mock.patch("hf_toolssm.evaluation.score_instances", dies_at_size_3), pytest.raises(KeyboardInterrupt):
        main(argv)  # still dies at 3, and did not score 2 again
    assert scored_sizes == [3]
    capsys.readouterr()
    assert main(argv) == 0
    assert "[kept from an interrupted run]" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [r["size"] for r in results] == [2, 3] and results[0] == first and not partial.exists()
    assert json.loads(out.read_text())["sizes_kept_from_an_interrupted_run"] == [2]

    # a partial file of another seed, or of an older model at the same path, is not a result to keep
    for other in ({"seed": 8}, {"checkpoint_modified": "2020-01-01T00:00:00+00:00"}):
        partial.write_text(json.dumps(dict(json.loads(out.read_text()), **other)))
        scored_sizes.clear()
        with mock.patch("hf_toolssm.evaluation.score_instances", dies_at_size_3), pytest.raises(KeyboardInterrupt):
            main(argv)
        assert scored_sizes == [2, 3]


def test_mistakes_are_the_complement_of_token_accuracy_and_the_cli_prints_them(checkpoint, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolssm.evaluation import segment_of, teacher_forced_mistakes, teacher_forced_token_accuracy
    from hf_toolssm.tasks import get_task

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    instance = get_task("addition").sample(random.Random(0), 3)
    mistakes, scored = teacher_forced_mistakes(model, tokenizer, instance)
    assert mistakes, "an untrained model should get some reference tokens wrong"
    assert teacher_forced_token_accuracy(model, tokenizer, instance) == pytest.approx(1 - len(mistakes) / scored)
    tokens = instance.full_tokens()
    for mistake in mistakes:
        assert mistake.expected == tokens[mistake.position] != mistake.predicted
        assert "".join(tokens[: mistake.position]).endswith(mistake.context)

    assert all(mistake.segment == segment_of(tokens, instance.roles(), mistake.position) for mistake in mistakes)

    assert main(["eval", str(checkpoint), "--sizes", "2", "--samples", "2", "--out", str(tmp_path / "r.json"),
                 "--show-mistakes", "3"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("size 2 token")]
    assert len(lines) == 3 and "expected" in lines[0] and "predicted" in lines[0]


def test_model_card_carries_model_index_metadata(checkpoint, tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"seed": 1, "command": "toolssm eval ...", "machine": "m", "date": "d", "results": [
        {"size": 10, "samples": 5, "answer_exact_match": 1.0, "trace_exact_match": 0.8, "token_accuracy": 0.99}]}))
    main(["card", str(checkpoint), "--eval-results", str(results), "--reproduce", "toolssm train --config x.yaml",
          "--notes", "Seed 1 of the same config: 0.7 at size 10."])
    from huggingface_hub import ModelCard

    card = ModelCard.load(checkpoint / "README.md")
    values = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values[("size-10", "trace_exact_match")] == 0.8
    assert "toolssm train --config x.yaml" in card.text and "| 10 | 5 | 1.000 | 0.800 |" in card.text
    assert "trained from scratch" in card.text and "pass rate" not in card.text
    assert "The results below test it at sizes up to 10; it was trained on sizes up to 5." in card.text
    assert card.text.index("Seed 1 of the same config: 0.7 at size 10.") > card.text.index("| 10 | 5 |")


def test_the_card_of_a_training_runs_final_folder_is_named_after_the_run(checkpoint, tmp_path):
    """runs/NAME/final: the card's title is NAME, not "final"; its parameter count is the weights'."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "runs" / "addition_tool_mamba_seed4" / "final"
    shutil.copytree(checkpoint, folder)
    text = write_model_card(folder).read_text()
    parameters = AutoModelForCausalLM.from_pretrained(checkpoint).num_parameters()
    assert "\n# addition_tool_mamba_seed4\n" in text and f"({parameters:,} parameters: 1 layers, d_model\n32)" in text


def test_card_rejects_an_eval_results_file_that_toolssm_eval_did_not_write(checkpoint, tmp_path):
    results = tmp_path / "other.json"
    results.write_text(json.dumps({"accuracy": 1.0}))
    with pytest.raises(SystemExit, match=r"toolssm card: .*other\.json: not a `toolssm eval` results file"):
        main(["card", str(checkpoint), "--eval-results", str(results)])



@pytest.mark.parametrize("results, message", [
    ({"task": "hanoi_recursive", "results": [{"size": 5, "samples": 2, "answer_exact_match": 1.0,
                                              "trace_exact_match": 1.0}]},
     r"scores the task 'hanoi_recursive', but .* was trained on 'addition'"),
    ({"task": "addition", "results": [{"size": 5}]}, r"a results row lacks samples, answer_exact_match"),
    ({"results": ["5"]}, r"a results row lacks size"),
])
def test_card_rejects_results_of_another_task_or_without_scores(checkpoint, tmp_path, results, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="toolssm card: .*" + message):
        main(["card", str(checkpoint), "--eval-results", str(path)])


def test_a_model_type_typo_is_named_even_where_the_folder_ships_code(checkpoint, tmp_path):
    """A config.json with an auto_map (a shipped card's) and a misspelt model_type: transformers would ask, on
    the terminal, whether to run the folder's code; the CLI names the typo instead."""
    folder = tmp_path / "typo"
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tool_mambaa", auto_map={"AutoConfig": "configuration_tool_mamba.ToolMambaConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"model_type 'tool_mambaa', which transformers does not know; "
                                         r"did you mean 'tool_mamba'\?"):
        main(["solve", str(folder), "1+2"])


def test_card_of_a_shipped_folder_reads_its_own_results_by_default(tmp_path, capsys):
    from huggingface_hub import ModelCard

    folder = tmp_path / "card"
    shutil.copytree(ROOT / "model_cards" / "toolmamba-addition", folder)
    assert main(["card", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "eval_results.json (--eval-results names others)" in err and "replacing" in err
    shipped = json.loads((folder / "eval_results.json").read_text())["results"]
    indexed = {r.dataset_config for r in ModelCard.load(folder / "README.md").data.eval_results}
    assert indexed == {f"size-{row['size']}" for row in shipped}


def test_demo_without_the_shipped_checkpoint_says_where_it_lives(tmp_path, monkeypatch):
    from hf_toolssm import cli

    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", tmp_path / "site-packages" / "model_cards" / "toolmamba-addition")
    with pytest.raises(SystemExit, match=r"^toolssm demo: the shipped checkpoint is not at .*pip install -e \."):
        main(["demo"])


def test_small_usage_errors_say_what_to_do(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"holds a PEFT adapter, not a whole model: merge it"):
        main(["solve", str(tmp_path / "adapter"), "1+2"])
    with pytest.raises(SystemExit, match=r"give a PROBLEM \(e.g. \"123\+4567\"\) or --random SIZE$"):
        main(["solve", "model_cards/toolmamba-addition"])
    with pytest.raises(SystemExit, match=r"--plot .*plot must end in .png"):
        main(["eval", "model_cards/toolmamba-addition", "--out", str(tmp_path / "r.json"), "--plot",
              str(tmp_path / "plot")])
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith("toolssm ")


def test_a_folder_without_a_tokenizer_says_so(checkpoint, tmp_path):
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(checkpoint, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(SystemExit, match=r"toolssm solve: .*no_tokenizer has no tokenizer \(tokenizer.json\); "
                                         r"save it beside the model"):
        main(["solve", str(folder), "1+2"])


def test_decoding_commands_use_one_thread_unless_told(monkeypatch):
    from hf_toolssm.cli import build_parser, set_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        set_threads(None)
        assert torch.get_num_threads() == 2  # the user's OMP_NUM_THREADS stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        set_threads(None)
        assert torch.get_num_threads() == 1
        set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for command in (["solve", "m", "1+2"], ["eval", "m", "--out", "r.json"], ["demo"]):
        assert build_parser().parse_args([*command, "--threads", "3"]).threads == 3


def test_naming_the_checkpoints_own_task_keeps_its_options(tmp_path):
    """--task logical_graph on a checkpoint trained with options (print_output, reread_gate) is that task, not
    the bare one: the traces differ."""
    from hf_toolssm.cli import load_checkpoint

    folder = ROOT / "model_cards" / "toolmamba-logical-graph"
    _, _, own = load_checkpoint(str(folder), None, "test")
    _, _, named = load_checkpoint(str(folder), "logical_graph", "test")
    assert own.print_output and own.reread_gate
    assert (named.print_output, named.reread_gate) == (True, True)  # before: False, False


def test_a_shipped_card_saved_again_through_hf_toolssm_points_at_no_code_it_lacks(tmp_path):
    """A copy saved from the library's classes has no code files, so no auto_map either: a trust_remote_code load
    of it would look for files that are not there."""
    from transformers import AutoModelForCausalLM

    folder = ROOT / "model_cards" / "toolmamba-addition"
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(tmp_path)
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert not list(tmp_path.glob("*.py"))


def test_model_card_of_a_coding_run_started_from_another_checkpoint(checkpoint, tmp_path):
    """A coding run's card leads with the pass rate, says which checkpoint it continued, and points at the
    training config shipped beside the weights."""
    folder = tmp_path / "coding"
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tool_config"] = {"task": "coding_interactive", "train_max_size": 16, "init_from": "runs/lg/final"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "train_config.yaml").write_text("task: coding_interactive\n")
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"seed": 1, "results": [{"size": 20, "samples": 50, "pass_rate": 0.62,
        "answer_exact_match": 0.5, "trace_exact_match": 0.1, "token_accuracy": None}]}))  # --no-token-accuracy
    from huggingface_hub import ModelCard

    card = ModelCard.load(write_model_card(folder, eval_results=results))
    indexed = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert indexed[("size-20", "pass_rate")] == 0.62
    assert "| size | samples | pass rate | answer exact |" in card.text
    assert "| 20 | 50 | 0.620 | 0.500 | 0.100 | – |" in card.text
    assert "fine-tuned from `runs/lg/final`" in card.text and "--config train_config.yaml" in card.text


_BLOCK_HF_TOOLSSM = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "hf_toolssm" or name.startswith("hf_toolssm."):
                raise ImportError("hf_toolssm is not installed here")
    sys.meta_path.insert(0, Block())
""")


def _remote_code_logits_script(checkpoint, ids_path, out_path):
    return _BLOCK_HF_TOOLSSM + textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)  # as the card says
        assert tokenizer.tokenize("12+34=") == list("12+34="), tokenizer.tokenize("12+34=")
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        # the fused C++ scan builds from the source shipped as a module (the cache holds no csrc/ folder)
        kernels = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".kernels"]
        assert kernels.cpu_scan_extension() is not None, "the C++ scan did not build in the remote code"
        torch.save(model(input_ids=torch.load({str(ids_path)!r})).logits, {str(out_path)!r})
    """)


def _exported_copy(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "exported"
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(folder)
    export_remote_code(folder)
    ids = torch.randint(2, 100, (2, 9))
    torch.save(ids, tmp_path / "ids.pt")
    return folder, model(input_ids=ids).logits.detach()


def test_checkpoint_loads_with_trust_remote_code_without_hf_toolssm(checkpoint, tmp_path):
    folder, expected = _exported_copy(checkpoint, tmp_path)
    script = _remote_code_logits_script(folder, tmp_path / "ids.pt", tmp_path / "logits.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


@pytest.mark.slow
def test_checkpoint_loads_with_trust_remote_code_in_a_fresh_venv(checkpoint, tmp_path):
    """The Hub path for users who do not install us: a new venv with torch + transformers only."""
    folder, expected = _exported_copy(checkpoint, tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    import transformers

    subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0", f"transformers=={transformers.__version__}"],
                   check=True, timeout=900)
    script = _remote_code_logits_script(folder, tmp_path / "ids.pt", tmp_path / "logits.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


def test_demo_on_the_shipped_checkpoint_solves_fresh_additions(tmp_path, capsys):
    """The README's main job, at small sizes: the shipped checkpoint must get every addition right."""
    assert main(["demo", "--sizes", "5,30", "--samples", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4/4 answers correct, 4/4 traces exact" in out
    assert "answer:" in out and (tmp_path / "demo_accuracy.png").stat().st_size > 1000
    payload = json.loads((tmp_path / "demo_results.json").read_text())
    assert [r["trace_exact_match"] for r in payload["results"]] == [1.0, 1.0]


def test_solve_on_the_shipped_checkpoint_prints_the_sum():
    from hf_toolssm.cli import DEFAULT_CHECKPOINT

    a, b = "98765432109876543210", "12345678901234567890"
    result = subprocess.run([sys.executable, "-m", "hf_toolssm.cli", "solve", str(DEFAULT_CHECKPOINT), f"{a}+{b}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == str(int(a) + int(b))
    assert result.stderr.rstrip().endswith("[the answer is right]")


def test_harness_on_the_shipped_checkpoint_matches_the_results_page():
    """The results page claims 100% whole-trace exact match at small sizes for the shipped model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolssm.cli import DEFAULT_CHECKPOINT
    from hf_toolssm.evaluation import evaluate_length_generalization
    from hf_toolssm.tasks import get_task

    claimed = json.loads((ROOT / "eval" / "results" / "addition" / "tool_mamba_seed0.json").read_text())
    assert {r["size"]: r["trace_exact_match"] for r in claimed["results"]}[10] == 1.0
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_CHECKPOINT)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_CHECKPOINT)
    results = evaluate_length_generalization(model, tokenizer, get_task("addition"), [5, 10], samples=10, seed=1234,
                                             progress=False)
    for row in results:
        assert (row.answer_exact_match, row.trace_exact_match, row.token_accuracy) == (1.0, 1.0, 1.0)


def test_evaluate_checks_every_size_before_touching_the_model():
    from hf_toolssm.evaluation import evaluate_length_generalization
    from hf_toolssm.tasks import get_task

    # model=None: had any decode started first, this would be an AttributeError instead
    with pytest.raises(ValueError, match=r"logical_graph: test size is the number of nodes .* got 3"):
        evaluate_length_generalization(None, None, get_task("logical_graph"), [10, 3], progress=False)


def test_eval_without_token_accuracy_writes_standard_json(checkpoint, tmp_path, capsys):
    """--no-token-accuracy: the skipped metric is null (standard JSON, not NaN) and printed as '-'."""
    out = tmp_path / "r.json"
    argv = ["eval", str(checkpoint), "--sizes", "2", "--samples", "2", "--no-token-accuracy", "--out", str(out)]
    assert main(argv) == 0

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    (row,) = json.loads(out.read_text(), parse_constant=refuse)["results"]
    assert row["token_accuracy"] is None and 0.0 <= row["answer_exact_match"] <= 1.0
    assert "token -" in capsys.readouterr().out


def test_eval_checks_its_outputs_before_decoding_and_names_damaged_weights(checkpoint, tmp_path, capsys):
    for bad in (tmp_path, tmp_path / "missing" / "r.json"):
        with pytest.raises(SystemExit, match=f"toolssm eval: --out {bad} must be a file in an existing folder"):
            main(["eval", str(checkpoint), "--sizes", "2", "--out", str(bad)])
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoint, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(SystemExit, match=r"damaged: the weights cannot be read \(SafetensorError"):
        main(["eval", str(damaged), "--sizes", "2", "--out", str(tmp_path / "r.json")])


def test_checkpoint_modified_is_the_models_time_not_a_later_cards(checkpoint, tmp_path):
    import os

    from hf_toolssm.evaluation import checkpoint_modified

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    for file in folder.iterdir():
        os.utime(file, (1e9, 1e9))
    before = checkpoint_modified(folder)
    write_model_card(folder)  # README.md written now
    assert checkpoint_modified(folder) == before == "2001-09-09T01:46:40+00:00"


def test_metric_module_on_hand_made_cases():
    from hf_toolssm.metrics import load_tool_trace_accuracy

    metric = load_tool_trace_accuracy()
    scores = metric.compute(
        predicted_traces=[["a", "b"], ["a", "x"], ["a", "b"]],
        reference_traces=[["a", "b"], ["a", "b"], ["a", "b"]],
        answers_correct=[True, True, False],  # a right answer from a wrong trace; a right trace, wrong answer
        token_accuracies=[1.0, 0.5, 0.0],
    )
    assert scores == {"answer_exact_match": 2 / 3, "trace_exact_match": 1 / 3, "token_accuracy": 0.5}
    unmeasured = metric.compute(predicted_traces=[["a"]], reference_traces=[["a"]], answers_correct=[True],
                                token_accuracies=[None])
    assert unmeasured == {"answer_exact_match": 1.0, "trace_exact_match": 1.0, "token_accuracy": None}
    # coding: the pass rate judges the files the decode left, whatever the answer said
    scores = metric.compute(
        predicted_traces=[["a"], ["a"]], reference_traces=[["a"], ["b"]], answers_correct=[True, False],
        token_accuracies=[1.0, 1.0], final_states_correct=[False, True],
    )
    assert scores["answer_exact_match"] == 0.5 and scores["pass_rate"] == 0.5
    with pytest.raises(ValueError, match="1 final states for 2 instances"):
        metric.compute(predicted_traces=[["a"], ["a"]], reference_traces=[["a"], ["a"]], answers_correct=[True, True],
                       token_accuracies=[1.0, 1.0], final_states_correct=[True])
    with pytest.raises(ValueError, match="no instances"):
        metric.compute(predicted_traces=[], reference_traces=[], answers_correct=[], token_accuracies=[])
    one = {"predicted_traces": [["a"]], "reference_traces": [["a"]]}
    with pytest.raises(ValueError, match="answers_correct is a list of True/False"):  # datasets reads "False" as True
        metric.compute(**one, answers_correct=["False"], token_accuracies=[1.0])
    with pytest.raises(ValueError, match="final_states_correct is a list of True/False"):
        metric.compute(**one, answers_correct=[True], token_accuracies=[1.0], final_states_correct=["0"])
    with pytest.raises(ValueError, match=r"a token accuracy is a fraction in \[0, 1\] or None, got 5.0"):
        metric.compute(**one, answers_correct=[True], token_accuracies=[5.0])
    with pytest.raises(ValueError, match="pass token_accuracies too"):
        metric.compute(**one, answers_correct=[True])


SHIPPED = sorted(path.parent for path in (ROOT / "model_cards").glob("*/config.json"))


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda path: path.name)
def test_the_shipped_remote_code_is_the_package_code(folder, tmp_path):
    """The modeling files next to the shipped weights are generated by export_remote_code: they must equal a
    fresh export, or users of trust_remote_code would run stale code."""
    from hf_toolssm.model_card import _REMOTE_CODE

    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh)
    export_remote_code(fresh)
    for name in [*_REMOTE_CODE, "selective_scan_source.py", "config.json"]:
        assert (folder / name).read_text() == (fresh / name).read_text(), f"re-export {name}"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda path: path.name)
def test_a_shipped_card_carries_the_results_shipped_beside_it(folder):
    """Every shipped folder: a card that loads, whose model index holds the eval_results.json beside it."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    results = json.loads((folder / "eval_results.json").read_text())
    metric = "pass_rate" if results["results"][0].get("pass_rate") is not None else "trace_exact_match"
    indexed = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    for row in results["results"]:
        assert indexed[(f"size-{row['size']}", metric)] == round(row[metric], 4)
    assert json.loads((folder / "config.json").read_text())["tool_config"]["task"] in card.text


def test_merged_eval_grids_are_what_the_addition_card_ships():
    """merge_eval_results (used by both shipping scripts) joins the 100-sample grid and the 10,000-digit one."""
    from hf_toolssm.model_card import merge_eval_results

    grids = [ROOT / "eval/results/addition/tool_mamba_seed0.json",
             ROOT / "eval/results/addition/tool_mamba_seed0_10k.json"]
    merged = merge_eval_results(list(reversed(grids)))  # any order: rows come out sorted by size
    shipped = json.loads((ROOT / "model_cards/toolmamba-addition/eval_results.json").read_text())
    assert merged["results"] == shipped["results"] and [r["size"] for r in merged["results"]][-1] == 10000
    with pytest.raises(ValueError, match="no results files"):
        merge_eval_results([])


def _shipped_scores(name: str, size: int, samples: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolssm.data import heldout_instances
    from hf_toolssm.evaluation import score_instances
    from hf_toolssm.tasks import checkpoint_task

    folder = ROOT / "model_cards" / name
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    task = checkpoint_task(json.loads((folder / "config.json").read_text())["tool_config"])  # with its options
    instances = heldout_instances(task, 1234, size, samples)  # the first of the stream the card's figures used
    scores, _ = score_instances(model, AutoTokenizer.from_pretrained(folder), task, instances, size=size,
                                token_accuracy=False, progress=False)
    return scores


def test_the_shipped_hanoi_model_solves_beyond_its_training_size_as_its_card_says():
    """toolmamba-hanoi-recursive, trained on <= 7 disks: its card claims every 8-disk trace exact."""
    scores = _shipped_scores("toolmamba-hanoi-recursive", 8, 2)  # 2 x 18.6k-token traces
    assert scores.trace_exact_match == 1.0 and scores.answer_exact_match == 1.0


def test_the_shipped_logical_graph_model_evaluates_graphs_5x_its_training_size_as_its_card_says():
    """toolmamba-logical-graph, trained on <= 10 nodes (the trace that looks each gate up again): its card claims
    every 50-node trace exact."""
    scores = _shipped_scores("toolmamba-logical-graph", 50, 4)
    assert scores.trace_exact_match == 1.0 and scores.answer_exact_match == 1.0


def test_the_shipped_coding_model_fixes_small_codebases_as_its_card_says():
    """toolmamba-coding-interactive: its card claims 98% pass at 4 functions; the files its decodes leave pass."""
    scores = _shipped_scores("toolmamba-coding-interactive", 4, 4)
    assert scores.pass_rate >= 0.75


def test_a_mistake_is_placed_in_its_command_by_tool_tag_and_verb():
    """segment_of names the command a trace token belongs to, whichever of its tokens it is."""
    from hf_toolssm.evaluation import segment_of
    from hf_toolssm.tasks import get_task
    from hf_toolssm.tools.base import Role

    instance = get_task("coding_interactive").sample(random.Random(0), 4)
    tokens, roles = instance.full_tokens(), instance.roles()
    start = next(t for t in range(len(tokens)) if tokens[t : t + 5] == ["[code]", "o", "p", "e", "n"])
    end = tokens.index("[/cmd]", start) + 1
    assert {segment_of(tokens, roles, t) for t in range(start, end)} == {"[code]open"}
    run = next(t for t in range(len(tokens)) if tokens[t : t + 5] == ["[code]", "r", "u", "n", "[/cmd]"])
    assert segment_of(tokens, roles, run + 2) == "[code]run"
    assert segment_of(tokens, roles, len(tokens) - 2) == "output"
    graph = get_task("logical_graph").sample(random.Random(0), 4)
    tokens, roles = graph.full_tokens(), graph.roles()
    assert segment_of(tokens, roles, tokens.index("[find]") + 2) == "[find]"  # a label is not a verb
    assert segment_of(tokens, roles, roles.index(Role.THOUGHT)) == "thought"


def _load_eval_script(name: str):
    """A script of eval/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_mistake_positions_script_lists_every_rows_teacher_forced_mistakes(checkpoint, tmp_path):
    """eval/mistake_positions.py: each row's mistakes (offset, segment, context, tokens) and a summary that adds up."""
    script = _load_eval_script("mistake_positions")
    out = tmp_path / "positions.json"
    assert script.main([str(checkpoint), "--sizes", "2,3", "--samples", "3", "--head", "5", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["command"].startswith("python eval/mistake_positions.py ") and "date" in payload
    for result in payload["results"]:
        rows, summary = result["rows"], result["summary"]
        mistakes = [mistake for row in rows for mistake in row["mistakes"]]
        assert len(rows) == summary["rows"] == 3
        assert all(0 <= m["offset"] < row["trace_tokens"] for row in rows for m in row["mistakes"])
        assert summary["mistakes"] == len(mistakes) > 0  # an untrained model
        assert summary["mistakes_past_token_5"] == sum(m["offset"] >= 5 for m in mistakes)
        assert sum(summary["mistakes_by_segment"].values()) == summary["mistakes"]
        assert all(summary["mistakes_by_segment"][s] <= n for s, n in summary["model_tokens_by_segment"].items())
        assert all(m["expected"] != m["predicted"] and m["context"] for m in mistakes)
    # --max-listed trims each row's list, not the counts: the same run, its rows listing at most one mistake
    listed = tmp_path / "listed.json"
    assert script.main([str(checkpoint), "--sizes", "2,3", "--samples", "3", "--head", "5", "--max-listed", "1",
                        "--out", str(listed)]) == 0
    for full, trimmed in zip(payload["results"], json.loads(listed.read_text())["results"]):
        assert trimmed["summary"] == full["summary"]
        for full_row, row in zip(full["rows"], trimmed["rows"]):
            assert row["mistakes"] == full_row["mistakes"][:1]
            assert row["mistakes_not_listed"] == len(full_row["mistakes"]) - len(row["mistakes"])
    with pytest.raises(SystemExit):  # a negative count is a usage error, not a list cut from its end
        script.main([str(checkpoint), "--sizes", "2", "--max-listed", "-1"])
    with pytest.raises(SystemExit, match=r"^mistake_positions\.py: '.*typo' is not a checkpoint folder"):
        script.main([str(tmp_path / "typo"), "--sizes", "2"])  # the script's own name heads its errors
    graph = str(ROOT / "model_cards" / "toolmamba-logical-graph")
    for name in ("mistake_positions", "decode_divergence"):  # sizes and --out checked before any decoding
        with pytest.raises(SystemExit, match=rf"^{name}\.py: logical_graph: --sizes .*got 3"):
            _load_eval_script(name).main([graph, "--sizes", "3"])
        with pytest.raises(SystemExit, match=rf"^{name}\.py: --out .* must be a file in an existing folder"):
            _load_eval_script(name).main([graph, "--sizes", "4", "--out", str(tmp_path)])


def test_demo_and_bench_check_their_options_before_the_work(tmp_path):
    graph = str(ROOT / "model_cards" / "toolmamba-logical-graph")
    with pytest.raises(SystemExit, match=r"^toolssm demo: logical_graph: --sizes .*got 3"):
        main(["demo", "--model", graph, "--sizes", "3", "--out", str(tmp_path / "demo")])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"^toolssm demo: --out .*file is a file"):
        main(["demo", "--out", str(tmp_path / "file")])
    with pytest.raises(SystemExit, match=r"^toolssm bench: --out .* must be a file in an existing folder"):
        main(["bench", "scan", "--quick", "--out", str(tmp_path / "missing" / "bench.json")])


def test_decode_divergence_finds_the_first_difference_and_one_edit_decodes():
    """eval/decode_divergence.py on hand-made traces: where a decode leaves the reference, and whether it is the
    reference with one run inserted, deleted or one token replaced there."""
    script = _load_eval_script("decode_divergence")
    reference = list("abcdef")
    assert script.first_difference(reference, list("abcdef")) is None
    assert script.first_difference(reference, list("abXdef")) == 2
    assert script.first_difference(reference, list("abc")) == 3  # the decode stopped early
    assert script.first_difference(reference, list("abcdefg")) == 6  # ran on past the reference's end
    assert script.is_one_edit(reference, list("abXdef"), 2)  # replaced
    assert script.is_one_edit(reference, list("abef"), 2)  # "cd" skipped
    assert script.is_one_edit(reference, list("abXYcdef"), 2)  # "XY" inserted
    assert not script.is_one_edit(reference, list("abXYef"), 2)  # "cd" replaced by "XY": two tokens
    assert not script.is_one_edit(reference, list("abXdeZ"), 2)  # and a second difference further on
    assert not script.is_one_edit(reference, list("abefg"), 2)  # "cd" skipped and "g" added at the end


def test_decode_divergence_script_summarizes_its_rows(checkpoint, tmp_path):
    """eval/decode_divergence.py on a tiny untrained checkpoint: one row per decode, a summary that adds up."""
    script = _load_eval_script("decode_divergence")
    out = tmp_path / "divergence.json"
    assert script.main([str(checkpoint), "--sizes", "2,3", "--samples", "3", "--batch-size", "2", "--head", "5",
                        "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["command"].startswith("python eval/decode_divergence.py ") and "date" in payload
    for result in payload["results"]:
        rows, summary = result["rows"], result["summary"]
        diverged = [row for row in rows if not row["trace_exact"]]
        assert diverged  # an untrained model
        assert len(rows) == summary["rows"] == 3
        assert summary["trace_exact"] == 3 - len(diverged)
        assert summary["answer_right"] == sum(row["answer_right"] for row in rows)
        assert summary["diverged_in_the_first_5_tokens"] == sum(row["offset"] < 5 for row in diverged)
        assert sum(d["rows"] for d in summary["divergences"]) == len(diverged)
        for row in diverged:  # the tokens named are the two traces' tokens at the offset
            assert row["expected"] != row["decoded"]
            assert row["offset"] <= min(row["trace_tokens"], row["decoded_tokens"])


def test_run_experiment_trains_a_missing_init_from_chain_first(tmp_path):
    """eval/run_experiment.sh: a run whose init_from checkpoint is missing has that run trained first (and its own
    starting point before it); an interrupted one resumes; a finished one is not trained again."""
    configs = tmp_path / "training" / "configs"
    configs.mkdir(parents=True)
    (configs / "base.yaml").write_text("model_type: tool_mamba\n")
    (configs / "middle.yaml").write_text("init_from: runs/base_seed3/final\n")
    (configs / "top.yaml").write_text("init_from: runs/middle_seed1/final\n")
    (tmp_path / "runs" / "middle_seed1").mkdir(parents=True)  # interrupted: it resumes
    # toolssm stubbed: record the call and leave the checkpoint a real training would ($5 is --output-dir's value)
    script = f"""
        source {shlex.quote(str(ROOT / "eval" / "run_experiment.sh"))}
        toolssm() {{ echo "$*" >> calls.txt; mkdir -p "$5/final"; touch "$5/final/config.json"; }}
        train_run training/configs/top.yaml runs/top_seed0 0
        train_run training/configs/top.yaml runs/top_seed0 0
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls.txt").read_text().splitlines() == [
        "train --config training/configs/base.yaml --output-dir runs/base_seed3 --seed 3",
        "train --config training/configs/middle.yaml --output-dir runs/middle_seed1 --seed 1 --resume",
        "train --config training/configs/top.yaml --output-dir runs/top_seed0 --seed 0",
    ]
    assert done.stdout.count("which is missing: training it first") == 2


def test_run_queue_overlap_evaluates_each_job_beside_the_next_training(tmp_path):
    """eval/run_queue.sh --overlap: job a's evaluation runs while the next jobs train, and a long one holds back
    only the evaluations after it; evaluations run one at a time, in queue order and only after their own
    training; a failed training is not evaluated; a finished job is skipped."""
    (tmp_path / "eval" / "results" / "done").mkdir(parents=True)
    (tmp_path / "eval" / "results" / "done" / "m_seed0.json").write_text("{}")
    shutil.copy(ROOT / "eval" / "run_queue.sh", tmp_path / "eval")
    # run_experiment.sh stubbed; a's evaluation waits (up to 10 s) for d's training to start, so a queue that held
    # the trainings back behind it logs "end --eval-only a" first
    (tmp_path / "eval" / "run_experiment.sh").write_text(textwrap.dedent("""\
        echo "start $*" >> calls.txt
        [ "$*" = "--train-only c m 0" ] && exit 1
        if [ "$*" = "--eval-only a m 0" ]; then
          for _ in $(seq 100); do grep -q "start --train-only d" calls.txt && break; sleep 0.1; done
        fi
        echo "end $*" >> calls.txt
    """))
    (tmp_path / "queue.txt").write_text("# a comment\na m 0\ndone m 0\nb m 0\nc m 0\nd m 0\n")
    done = subprocess.run(["bash", "eval/run_queue.sh", "--overlap", "queue.txt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    at = {call: calls.index(call) for call in calls}
    assert at["end --train-only a m 0"] < at["start --eval-only a m 0"]
    assert at["start --train-only d m 0"] < at["end --eval-only a m 0"]  # the trainings go on past a's evaluation
    # one evaluation at a time, in queue order, each after its own training
    assert at["end --eval-only a m 0"] < at["start --eval-only b m 0"] < at["end --eval-only b m 0"]
    assert at["end --eval-only b m 0"] < at["start --eval-only d m 0"]
    assert at["end --train-only b m 0"] < at["start --eval-only b m 0"]
    assert at["end --train-only d m 0"] < at["start --eval-only d m 0"]
    assert "start --eval-only c m 0" not in at and not any(" done " in call for call in calls)
    assert "== FAILED training: c m 0" in done.stdout and "== done already: done m 0" in done.stdout
    assert (tmp_path / "runs" / "logs" / "eval_d_m_seed0.log").exists()


def test_run_experiment_eval_only_says_when_the_run_is_not_trained(tmp_path):
    (tmp_path / "eval").mkdir()
    shutil.copy(ROOT / "eval" / "run_experiment.sh", tmp_path / "eval")
    done = subprocess.run(["bash", "eval/run_experiment.sh", "--eval-only", "addition", "tool_mamba", "0"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert "runs/addition_tool_mamba_seed0/final is not trained yet" in done.stderr
