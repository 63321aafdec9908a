"""``toolssm``: solve problems, train, evaluate, benchmark and write model cards from the command line.

The CLI only parses arguments and calls the library (``hf_toolssm.training``, ``hf_toolssm.evaluation``,
``hf_toolssm.benchmark``, ``hf_toolssm.model_card``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "model_cards" / "toolmamba-addition"

_ROLE_COLOURS = {"prompt": "\033[37m", "thought": "\033[36m", "command": "\033[33m", "observation": "\033[35m",
                 "output": "\033[32;1m"}
_RESET = "\033[0m"


def _provenance(argv: list[str]) -> dict:
    from .evaluation import provenance

    return provenance("toolssm " + shlex.join(argv))


def check_output_file(path: str | None, option: str, prog: str) -> None:
    """A usage error for an output path that cannot be written, checked before the work rather than after it."""
    if path is not None and (Path(path).is_dir() or not Path(path).parent.resolve().is_dir()):
        raise SystemExit(f"{prog}: {option} {path} must be a file in an existing folder")


def require_checkpoint_folder(model_path: str, prog: str, *, tokenizer: bool = False) -> Path:
    """``model_path`` as a Path, or a usage error that says what is wrong with the folder: from_pretrained would
    read a missing folder as a Hub repo id (and fail about repo names), a damaged one with a long traceback.
    ``tokenizer``: the folder must hold one too (everything that decodes)."""
    from .checkpoint import check_checkpoint

    try:
        check_checkpoint(model_path)
    except ValueError as error:
        raise SystemExit(f"{prog}: {error}") from None
    path = Path(model_path)
    if tokenizer and not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise SystemExit(f"{prog}: {model_path} has no tokenizer (tokenizer.json); save it beside the model with "
                         f"tokenizer.save_pretrained({str(model_path)!r})")
    return path


def load_checkpoint(model_path: str, task_name: str | None, prog: str, sizes: list[int] = ()):
    """A checkpoint folder -> (model, tokenizer, task): ``task_name``, else the checkpoint's own task; ``sizes``
    (a ``--sizes`` option) checked against it. Clear errors for what users get wrong, headed by ``prog``
    (``toolssm eval``, ``mistake_positions.py``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr carries the trace; a loading bar there is noise

    from .tasks import checkpoint_task, checkpoint_tool_config, get_task

    path = require_checkpoint_folder(model_path, prog, tokenizer=True)
    try:  # what check_checkpoint does not look at, e.g. the tokenizer's files; never run a folder's own code
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"{prog}: cannot load {model_path}: {' '.join(str(error).split())[:400]}") from None
    # an unknown --task, task arguments the task does not take, a checkpoint that names no task: usage errors
    tool_config = checkpoint_tool_config(path, model.config)
    trained_on = tool_config.get("task")
    try:  # the checkpoint's own task keeps its options (a logical graph's layout, say): only another is built bare
        task = get_task(task_name) if task_name and task_name != trained_on else checkpoint_task(tool_config)
    except ValueError as error:
        raise SystemExit(f"{prog}: {error}" + ("" if task_name else "; or pass --task")) from None
    if task_name and trained_on and task_name != trained_on:  # allowed (a transfer test), but worth saying
        print(f"{prog}: note: {model_path} was trained on {trained_on}, not {task_name}", file=sys.stderr)
    try:
        for size in sizes:
            task.validate_size(size, "--sizes")
    except ValueError as error:  # e.g. a logical graph of 3 nodes: a usage error, not a traceback
        raise SystemExit(f"{prog}: {error}") from None
    return model, tokenizer, task


def cmd_solve(args) -> int:
    from .data import heldout_instances
    from .evaluation import decode_budget, warm_up
    from .generation import generate_with_tools

    if args.problem is None and args.random is None:
        raise SystemExit("toolssm solve: give a PROBLEM (e.g. \"123+4567\") or --random SIZE")
    if args.problem is not None and args.random is not None:
        raise SystemExit("toolssm solve: give a PROBLEM or --random SIZE, not both")
    model, tokenizer, task = load_checkpoint(args.model, args.task, "toolssm solve")
    try:  # the problem's prompt, reference trace and answer
        if args.random is not None:  # the first test instance `toolssm eval --sizes SIZE --seed SEED` decodes
            task.validate_size(args.random, "--random")
            reference = heldout_instances(task, args.seed, args.random, 1)[0]
        else:
            problem = sys.stdin.read() if args.problem == "-" else args.problem.strip()  # a graph is many lines
            reference = task.instance_from_text(problem)
    except ValueError as error:  # the task's message says what it expected: a usage error, not a traceback
        raise SystemExit(f"toolssm solve: {error}") from None
    prompt = reference.prompt
    colour = sys.stderr.isatty() and not args.no_colour
    warm_up(model)  # before the prompt is shown and the clock starts: a fresh machine's kernel compile is ~1 min

    def stream(row, token, role):
        sys.stderr.write(f"{_ROLE_COLOURS[role.value]}{token}{_RESET}" if colour else token)

    if not args.quiet:  # the prompt is the trace's first part (a logical graph's can be thousands of lines)
        sys.stderr.write("".join(prompt) if not colour else f"{_ROLE_COLOURS['prompt']}{''.join(prompt)}{_RESET}")
    elif args.random is not None:  # the problem was drawn here: say which
        sys.stderr.write(f"[problem: {_excerpt(''.join(prompt).strip())}]\n")
    started = time.monotonic()
    (result,) = generate_with_tools(
        model, tokenizer, [prompt], task.make_environment,
        max_new_tokens=args.max_new_tokens or decode_budget(reference), time_budget=args.time_budget,
        on_token=None if args.quiet else stream, progress=False,
    )
    sys.stderr.write(
        ("" if args.quiet else "\n")  # end the streamed trace's line
        + f"[{len(result.generated_tokens)} trace tokens, {result.num_tool_calls} tool calls, "
        f"stopped: {result.stop_reason.value if result.stop_reason else 'unknown'}, "
        f"{time.monotonic() - started:.1f}s]\n"
    )
    right = task.check(reference, result.answer)
    if task.checks_final_state:  # coding: what counts is what the model did to the files, not what it answered
        fixed = task.check_final_state(reference, result.tools)
        sys.stderr.write(f"[the code is {'fixed' if fixed else 'not fixed'}: main.py in the sandbox "
                         f"{'prints' if fixed else 'does not print'} the reference fix's output; the pass rate "
                         "counts this]\n"
                         f"[its answer, the status line of its last run, {'matches' if right else 'differs from'} "
                         f"the reference fix's" + ("]\n" if right else f": {_excerpt(reference.answer)}]\n"))
    else:
        sys.stderr.write(f"[the answer is {'right' if right else 'wrong'}"
                         + ("]\n" if right else f"; the reference answer: {_excerpt(reference.answer)}]\n"))
    print(result.answer)
    return 0 if result.answer else 1


def _train_max_size(folder: str, config) -> int | None:
    """The largest size the checkpoint trained on (a dashed line on the plot), if it says."""
    from .tasks.registry import checkpoint_tool_config

    return checkpoint_tool_config(folder, config).get("train_max_size")


def _excerpt(text: str, limit: int = 200) -> str:
    """``text``, or its first ``limit`` characters and its length (a 12-disk Hanoi answer is 4k moves)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def cmd_eval(args) -> int:
    from .evaluation import (
        checkpoint_modified,
        evaluate_length_generalization,
        finished_sizes,
        first_mistakes,
        partial_results_path,
        plot_accuracy_vs_size,
        write_results,
    )

    for path, option in ((args.out, "--out"), (args.plot, "--plot")):  # before an hour of decoding, not after it
        check_output_file(path, option, "toolssm eval")
    if args.plot and Path(args.plot).suffix.lower() != ".png":  # matplotlib would add one: a file of another name
        raise SystemExit(f"toolssm eval: --plot {args.plot} must end in .png")
    model, tokenizer, task = load_checkpoint(args.model, args.task, "toolssm eval", args.sizes)
    sizes = list(dict.fromkeys(args.sizes))  # a size given twice is scored once
    # Each finished size is saved at once to OUT.partial.json; a rerun of the same command scores only the sizes
    # it lacks (an hour-long size lost to an interruption is not run twice), and OUT.json appears complete.
    header = dict(model=str(args.model), checkpoint_modified=checkpoint_modified(args.model), task=task.name,
                  seed=args.seed, **_provenance(args.argv))
    partial = partial_results_path(args.out)
    done = finished_sizes(partial, model=header["model"], task=task.name, seed=args.seed, samples=args.samples,
                          token_accuracy=not args.no_token_accuracy, modified=header["checkpoint_modified"])
    if done:  # the file says which rows an earlier run (its own date and machine) scored
        header["sizes_kept_from_an_interrupted_run"] = sorted(done)
    for size in sizes:
        if size in done:
            _print_size_result(done[size], note="  [kept from an interrupted run]")

    def save(result) -> None:
        done[result.size] = result
        write_results(partial, [done[size] for size in sizes if size in done], **header)
        _print_size_result(result)

    evaluate_length_generalization(
        model, tokenizer, task, [size for size in sizes if size not in done], samples=args.samples, seed=args.seed,
        batch_size=args.batch_size, token_accuracy=not args.no_token_accuracy, on_result=save,
    )
    results = [done[size] for size in sizes]
    write_results(args.out, results, **header)
    partial.unlink(missing_ok=True)
    if args.plot:  # the coding task's score is the pass rate (its traces are never exact), as on the results page
        metric = "pass_rate" if task.checks_final_state else "trace_exact_match"
        plot_accuracy_vs_size({Path(args.model).name: results}, args.plot, metric=metric,
                              title=f"{task.name}: length generalization",
                              train_max_size=None if args.task else _train_max_size(args.model, model.config))
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""), file=sys.stderr)
    if args.show_mistakes:
        for size in sizes:
            for mistake in first_mistakes(model, tokenizer, task, size, seed=args.seed, limit=args.show_mistakes):
                print(f"size {size} token {mistake.position} ({mistake.segment}): ...{mistake.context!r} -> expected "
                      f"{mistake.expected!r}, predicted {mistake.predicted!r}", file=sys.stderr)
    return 0


def _print_size_result(r, note: str = "") -> None:
    passed = "" if r.pass_rate is None else f"pass {r.pass_rate:.3f}  "
    token = "-" if r.token_accuracy is None else f"{r.token_accuracy:.4f}"  # None: --no-token-accuracy
    print(f"size {r.size:>6}: {passed}answer {r.answer_exact_match:.3f}  trace {r.trace_exact_match:.3f}  "
          f"token {token}  ({r.samples} samples, {r.mean_trace_tokens:.0f} tok/trace, "
          f"{r.decode_tokens_per_s:.0f} tok/s{_model_share(r)}){note}", flush=True)


def _model_share(r) -> str:
    """How many of the tokens per second the model itself wrote (None in results from before it was recorded)."""
    return "" if r.model_tokens_per_s is None else f", {r.model_tokens_per_s:.0f} by the model"


def cmd_train(args) -> int:
    from .training import TrainConfig, TrainingInterrupted, TrainingSetupError, train

    try:  # a missing file or a bad option: a usage error that names it, not a traceback
        config = TrainConfig.from_yaml(args.config, output_dir=args.output_dir, steps=args.steps, seed=args.seed)
    except (OSError, ValueError) as error:
        raise SystemExit(f"toolssm train: {error}") from None
    try:
        final = train(config, resume=args.resume)
    except TrainingSetupError as error:  # the output folder, init_from, a resume of another config
        raise SystemExit(f"toolssm train: {error}") from None
    except TrainingInterrupted as stopped:  # Ctrl-C or SIGTERM, after a checkpoint: the shell's code for the signal
        if _main_process():
            print(f"toolssm train: {stopped}", file=sys.stderr)
        return 128 + stopped.signal_number
    if _main_process():  # under torchrun, once
        print(final)
    return 0


def _main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or a process started alone: accelerate's answer, as training's."""
    from accelerate import PartialState

    return PartialState().is_main_process


def cmd_bench(args) -> int:
    from .benchmark import run_benchmarks

    check_output_file(args.out, "--out", "toolssm bench")
    if args.what in ("decode", "ragged", "all"):
        require_checkpoint_folder(args.model, "toolssm bench", tokenizer=True)
    if args.what == "ragged":
        from transformers import AutoConfig

        from .benchmark import RECURRENT_MODEL_TYPES

        model_type = AutoConfig.from_pretrained(args.model).model_type
        if model_type not in RECURRENT_MODEL_TYPES:
            raise SystemExit(f"toolssm bench ragged: {args.model} is a {model_type}; the ragged feed is for "
                             f"recurrent models ({', '.join(sorted(RECURRENT_MODEL_TYPES))})")
    report = run_benchmarks(args.what, model_path=args.model, quick=args.quick, size=args.size)
    report.update(_provenance(args.argv))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def cmd_card(args) -> int:
    from .model_card import write_model_card

    folder = require_checkpoint_folder(args.model, "toolssm card")
    eval_results = args.eval_results
    if eval_results is None and (folder / "eval_results.json").is_file():  # what a shipped folder carries
        eval_results = folder / "eval_results.json"
        print(f"toolssm card: the results of {eval_results} (--eval-results names others)", file=sys.stderr)
    if (folder / "README.md").is_file():
        print(f"toolssm card: replacing {folder / 'README.md'}", file=sys.stderr)
    try:
        path = write_model_card(args.model, eval_results=eval_results, reproduce=args.reproduce,
                                repo_id=args.repo_id, notes=args.notes)
    except (OSError, ValueError) as error:  # e.g. an --eval-results file that `toolssm eval` did not write
        raise SystemExit(f"toolssm card: {error}") from None
    print(path)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.model == str(DEFAULT_CHECKPOINT) and not DEFAULT_CHECKPOINT.is_dir():
        raise SystemExit(f"toolssm demo: the shipped checkpoint is not at {DEFAULT_CHECKPOINT}: it lives in the "
                         "project's checkout (model_cards/), which a non-editable install does not copy; install "
                         "with `pip install -e .` from the checkout, or pass --model FOLDER")
    require_checkpoint_folder(args.model, "toolssm demo", tokenizer=True)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise SystemExit(f"toolssm demo: --out {args.out} is a file; it names the folder for the JSON and the plot")
    try:
        return run_demo(args.model, sizes=args.sizes, samples=args.samples, out=args.out)
    except ValueError as error:  # a size the checkpoint's task does not have, say
        raise SystemExit(f"toolssm demo: {error}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a bad value is a usage error that names it, not a traceback)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """An argparse type: a number > 0, e.g. seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def size_list(text: str) -> list[int]:
    """An argparse type: comma-separated sizes, e.g. 10,100,1000."""
    try:
        return [positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers >= 1, e.g. 10,100,1000; got {text!r}"
        ) from None


def add_test_set_arguments(parser: argparse.ArgumentParser, *, samples: int) -> None:
    """The arguments of the per-size analysis scripts in eval/ (``mistake_positions.py``,
    ``decode_divergence.py``): a checkpoint, its task, the sizes and the test instances, the ones ``toolssm eval``
    decodes with the same ``--seed``."""
    parser.add_argument("model", help="checkpoint folder; its config names the task")
    parser.add_argument("--task", help="override the checkpoint's task")
    parser.add_argument("--sizes", required=True, type=size_list, help="comma-separated test sizes, e.g. 50,100")
    parser.add_argument("--samples", type=positive_int, default=samples,
                        help="test instances per size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="test-set seed, as toolssm eval's (default: %(default)s)")


def write_analysis(path: str, script: str, argv: list[str] | None, args: argparse.Namespace, task,
                   results: list[dict]) -> None:
    """An analysis script's JSON: the checkpoint, task and test seed, the command that wrote it (``python
    eval/SCRIPT ...``), the machine and the date, and its per-size ``results``."""
    from .evaluation import provenance

    command = f"python eval/{script} " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"model": args.model, "task": repr(task), "seed": args.seed, **provenance(command), "results": results}
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: OMP_NUM_THREADS where set, else 1: a small model's decode "
                        "steps are too short to share between threads; models of millions of parameters gain from "
                        "more)")


def set_threads(threads: int | None) -> None:
    """``--threads``, else ``OMP_NUM_THREADS`` (torch reads it itself), else one thread."""
    import torch

    if threads is not None or "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolssm",
        description="Tool-using state-space models: a Mamba that calls a pointer memory, a search tool, a "
        "calculator or a code sandbox while it decodes, and so generalizes far beyond its training lengths.",
        epilog="Examples:\n"
        "  toolssm demo                                   # the shipped addition model at 10/100/1000 digits\n"
        "  toolssm solve model_cards/toolmamba-addition \"123+4567\"\n"
        "  toolssm eval model_cards/toolmamba-addition --sizes 10,100,1000 --samples 100 --out r.json\n"
        "  toolssm train --config training/configs/addition_tool_mamba.yaml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="solve one problem with the tools in the loop, streaming the trace",
                       description="Decode one problem greedily with tools. The trace streams to stderr with roles "
                       "coloured (prompt, thought, command, observation, output); the final answer alone is the last "
                       "line of stdout. Exit code 0 when the model produced an answer. stderr ends by saying whether "
                       "the answer is right (against the task's reference trace), and for the coding tasks (a "
                       "repository SIZE-SEED, e.g. 8-123) whether the sandbox's files now pass.")
    p.add_argument("model", help="checkpoint folder (save_pretrained format), e.g. model_cards/toolmamba-addition")
    p.add_argument("problem", nargs="?", help='the problem as text, e.g. "123+4567" (the task comes from the '
                   "checkpoint); - reads it from stdin (a logical graph's lines)")
    p.add_argument("--random", type=positive_int, metavar="SIZE", help="instead of PROBLEM, a random test problem "
                   "of this size (digits, disks, nodes, functions): the first that `toolssm eval --sizes SIZE "
                   "--seed SEED` decodes")
    p.add_argument("--seed", type=int, default=1234, help="with --random: which problem (default: 1234, as eval)")
    p.add_argument("--task", help="override the checkpoint's task")
    p.add_argument("--max-new-tokens", type=positive_int, help="cap on trace tokens (default: twice the reference "
                   "trace's, as toolssm eval: a model that loops stops)")
    p.add_argument("--time-budget", type=positive_float, default=None, help="stop after this many seconds")
    p.add_argument("--quiet", action="store_true", help="do not stream the trace")
    p.add_argument("--no-colour", action="store_true", help="plain trace on stderr")
    add_threads_argument(p)
    p.set_defaults(command_parser=p, func=cmd_solve)

    p = sub.add_parser("eval", help="length-generalization evaluation over a grid of sizes, to JSON (+ PNG)",
                       description="Decode fresh test instances at every size with tools in the loop and write a JSON "
                       "object whose `results` list holds, per size: size, samples, answer_exact_match, "
                       "trace_exact_match, token_accuracy (fractions), mean_trace_tokens, decode_tokens_per_s (trace "
                       "tokens, observations included), model_tokens_per_s (the model's own); for "
                       "the coding tasks also pass_rate (the sandbox's files after the decode run with the reference "
                       "fix's output). Each size is saved as it finishes (OUT.partial.json): rerun an interrupted "
                       "command and it scores only the sizes left.")
    p.add_argument("model", help="checkpoint folder")
    p.add_argument("--task", help="task name (default: the checkpoint's)")
    p.add_argument("--sizes", type=size_list, default="5,10,20,50,100",
                   help="comma-separated sizes (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=100, help="test instances per size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234,
                   help="test seed: a stream of its own, apart from training's (small sizes can still repeat a "
                   "training instance) (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=50, help="rows decoded together (default: %(default)s)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--plot", help="also write accuracy vs size to this PNG")
    p.add_argument("--no-token-accuracy", action="store_true", help="skip the teacher-forced token accuracy pass")
    p.add_argument("--show-mistakes", type=non_negative_int, default=0, metavar="K",
                   help="also print (stderr) up to K teacher-forced mistakes per size, with the text before each: "
                   "where the model fails")
    add_threads_argument(p)
    p.set_defaults(command_parser=p, func=cmd_eval)

    p = sub.add_parser("train", help="train on tool traces from a YAML config (resumable)",
                       description="Train with Accelerate from a YAML config (see training/configs/). Checkpoints go "
                       "to OUTPUT_DIR/checkpoint-STEP, the final model to OUTPUT_DIR/final; --resume continues from "
                       "the last checkpoint with the same data order and optimizer state.")
    p.add_argument("--config", required=True, help="YAML training config")
    p.add_argument("--output-dir", help="override the config's output_dir")
    p.add_argument("--steps", type=positive_int, help="override the number of steps")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(command_parser=p, func=cmd_train)

    p = sub.add_parser("bench", help="speed benchmarks: scan paths, decode loops, the sandbox, a training step",
                       description="Measure the CPU scan paths against their references, the fast tool loop against "
                       "generate() (on a GPT-NeoX or Mistral checkpoint: generate() with a static and a dynamic KV "
                       "cache against the fast loop), the fast loop's ragged feed, with its programs on tool threads "
                       "and in line, against its in-step feed (ragged, not in all), the code sandbox's wait for a "
                       "program's exit, and a training step whole against micro-batched; writes ratios measured in "
                       "one run to a JSON file with the machine and date.")
    p.add_argument("what", choices=["scan", "decode", "ragged", "sandbox", "train", "all"], help="what to measure")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint for the decode benchmarks")
    p.add_argument("--size", type=positive_int,
                   help="instance size for ragged (default: the checkpoint's largest training size)")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--out", default="eval/results/bench.json", help="output JSON (default: %(default)s)")
    p.set_defaults(command_parser=p, func=cmd_bench)

    p = sub.add_parser("card", help="write a Hub-ready README.md model card for a checkpoint folder",
                       description="Write CHECKPOINT/README.md with huggingface_hub's ModelCard and model-index "
                       "metadata from an eval JSON. Push with one command: hf upload USER/NAME CHECKPOINT .")
    p.add_argument("model", help="checkpoint folder")
    p.add_argument("--eval-results", help="JSON written by `toolssm eval` (default: the folder's eval_results.json, "
                   "if it has one)")
    p.add_argument("--reproduce", help="the exact command that reproduces the checkpoint")
    p.add_argument("--repo-id", help="Hub repo id to name in the card, e.g. you/toolmamba-addition")
    p.add_argument("--notes", help="Markdown after the results: what they do not show (e.g. other seeds' results)")
    p.set_defaults(command_parser=p, func=cmd_card)

    p = sub.add_parser("demo", help="the README main job: the shipped model on fresh additions at growing sizes",
                       description="Solve fresh random additions at each size with the tool in the loop, print "
                       "accuracy, time and a trace excerpt, and write the accuracy plot (another checkpoint: its own "
                       "task). Exit code 0 when every answer is right.")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder (default: the shipped one)")
    p.add_argument("--sizes", type=size_list, default="10,100,1000", help="digits per operand (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=10, help="additions per size (default: %(default)s)")
    p.add_argument("--out", default="demo_output", help="folder for the JSON and PNG (default: %(default)s)")
    add_threads_argument(p)
    p.set_defaults(command_parser=p, func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # parse_args would answer with the top-level usage; the command's own says what it takes
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what results files record as their command
    if "threads" in args:
        set_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
