"""Speed benchmarks. Report ratios measured in one run (machines are noisy), never lone absolute times.

    scan    forward+backward of the selective scan: the reference loop vs the fused C++ path vs the
            pure-PyTorch chunked fallback, at a training-like shape; and a long single-sequence forward.
    decode  tool-augmented greedy decoding of additions: the fast tool loop vs stock generate() with the
            ToolCallingLogitsProcessor, same model, same prompts (traces must be identical); the fast loop
            with the fused C++ mixer step (ops/mamba_step.py) vs the unfused step; one-token forwards of
            the model (steps/s), fused vs unfused, at batch 1 and 16; and forwards of 2, 4 and 8 tokens on
            a cache (a command token plus a short observation), the one-token step loop vs the chunked
            conv + scan: what ToolMambaMixer.STEP_LOOP_MAX_LENGTH is set from. Given an attention
            baseline's checkpoint (GPT-NeoX, Mistral) instead: its generate() decode with the preallocated
            static KV cache that generate_with_logits_processor picks vs transformers' default dynamic one,
            and the fast tool loop on the same model (observations fed as one forward when every row has
            one pending, finished rows dropped from the batch), whose KV cache appends in place
            (generation/kv_cache.py) vs transformers' DynamicLayer, which copies the cache per token.
    ragged  the fast tool loop's ragged feed (each row its own number of tokens a forward, right-padded) vs its
            in-step feed, on a recurrent checkpoint's own task (``--size``): what ``RAGGED_MIN_FILL`` and
            ``RAGGED_MIN_WIDTH`` in generation/tool_loop.py are set from.
    sandbox the code sandbox's ``run`` as shipped vs with its exit polled with sleeps (not waited for on a pidfd),
            with the script run through runpy (not by the runner itself), with both, and without the run's
            own cgroup.
    train   one training step's forward+backward on the batches of the repo's Mamba configs (Hanoi, logical
            graph, coding, multiplication, addition), whole vs cut into micro-batches padded to their own
            longest row (TrainConfig.micro_batch_tokens).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from unittest import mock

import torch


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (and the one-off C++ build)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_scan(quick: bool = False) -> dict:
    from .ops import selective_scan as ss

    batch, d, n, length = (8, 64, 16, 64) if quick else (64, 128, 16, 220)
    g = torch.Generator().manual_seed(0)
    args = dict(
        u=torch.randn(batch, d, length, generator=g), delta=torch.randn(batch, d, length, generator=g),
        A=-torch.rand(d, n, generator=g) * 4, B=torch.randn(batch, n, length, generator=g),
        C=torch.randn(batch, n, length, generator=g), D=torch.randn(d, generator=g),
        z=torch.randn(batch, d, length, generator=g), delta_bias=torch.randn(d, generator=g),
    )
    leaves = {k: v.requires_grad_() for k, v in args.items()}

    def run(path):
        def fn():
            y = path(**leaves, delta_softplus=True)
            y.sum().backward()
        return fn

    def chunked(**kw):
        with mock.patch.object(ss, "_use_cpu_extension", lambda u: False):
            return ss.selective_scan_cpu(**kw)

    repeats = 3
    times = {
        "reference_loop": _median_time(run(ss.selective_scan_ref), repeats),
        "fused_cpp": _median_time(run(ss.selective_scan_cpu), repeats),
        "chunked_pytorch": _median_time(run(chunked), repeats),
    }
    return {
        "shape": {"batch": batch, "d_inner": d, "d_state": n, "length": length},
        "what": "selective scan forward+backward, median of 3",
        "speedup_fused_cpp_vs_reference": round(times["reference_loop"] / times["fused_cpp"], 2),
        "speedup_chunked_vs_reference": round(times["reference_loop"] / times["chunked_pytorch"], 2),
        "seconds": {k: round(v, 4) for k, v in times.items()},
    }


@contextlib.contextmanager
def _fused_step(enabled: bool):
    """Switch the fused C++ mixer step on or off for the duration (the module-level switch of ops.mamba_step)."""
    from .ops import mamba_step

    with mock.patch.object(mamba_step, "FUSED_STEP_ENABLED", enabled):
        yield


#: Our models, whose decode step is a fixed-size recurrent update (fused or not); the rest keep a KV cache.
RECURRENT_MODEL_TYPES = {"tool_mamba", "tool_rnn"}


def bench_decode(model_path: str, quick: bool = False) -> dict:
    """Two shapes: a batch of medium additions, and one long addition (where generate()'s growing
    input_ids and per-step overhead show); then one-token forwards alone. An attention checkpoint gets the
    KV-cache comparison instead (:func:`_bench_kv_cache`)."""
    from transformers import AutoConfig

    if AutoConfig.from_pretrained(model_path).model_type not in RECURRENT_MODEL_TYPES:
        return {"kv_cache": _bench_kv_cache(model_path, rows=2 if quick else 16, rounds=1 if quick else 3)}
    shapes = [(4, 10), (1, 30)] if quick else [(16, 50), (1, 500)]
    report = {f"{rows}x{digits}_digits": _bench_decode_shape(model_path, rows, digits, rounds=1 if quick else 3)
              for rows, digits in shapes}
    report["one_token_step"] = _bench_one_token_step(model_path, steps=100 if quick else 1000)
    report["short_chunk"] = _bench_short_chunk(model_path, forwards=50 if quick else 500)
    return report


def _bench_short_chunk(model_path: str, forwards: int, lengths: tuple[int, ...] = (2, 4, 8)) -> dict:
    """Forwards of a few tokens on a cache: one-token steps in a loop vs the chunked conv + scan."""
    from transformers import AutoModelForCausalLM

    from .models.tool_mamba.modeling_tool_mamba import ToolMambaMixer

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    report = {"what": f"model forward of a few tokens on a cache, median of 3 rounds of {forwards} forwards"}
    for rows in (1, 16):
        for length in lengths:
            seconds = _cached_forward_medians(model, rows, length, calls=forwards, warmup=5, variants={
                "step_loop": lambda length=length: mock.patch.object(ToolMambaMixer, "STEP_LOOP_MAX_LENGTH", length),
                "chunked": lambda: mock.patch.object(ToolMambaMixer, "STEP_LOOP_MAX_LENGTH", 1),
            })
            report[f"batch_{rows}_tokens_{length}"] = {
                "speedup_step_loop_vs_chunked": round(seconds["chunked"] / seconds["step_loop"], 2)
            }
    return report


def _bench_one_token_step(model_path: str, steps: int) -> dict:
    """Model forwards of one token on a cache (what every decoding step costs), fused vs unfused mixer step."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    report = {"what": f"model forward of one token on a cache, median of 3 rounds of {steps} steps"}
    for rows in (1, 16):
        seconds = _cached_forward_medians(model, rows, 1, calls=steps, warmup=10, variants={
            "fused": lambda: _fused_step(True), "unfused": lambda: _fused_step(False),
        })
        fused_s, unfused_s = seconds["fused"], seconds["unfused"]
        report[f"batch_{rows}"] = {
            "speedup_fused_step_vs_unfused": round(unfused_s / fused_s, 2),
            "steps_per_s": {"fused_step": round(steps / fused_s, 1), "unfused_step": round(steps / unfused_s, 1)},
        }
    return report


def _cached_forward_medians(model, rows: int, length: int, *, calls: int, warmup: int, variants: dict) -> dict:
    """Seconds for ``calls`` forwards of ``length`` tokens on a cache (``rows`` sequences, after an 8-token
    prompt) under each variant (name -> a context manager factory). The variants alternate, three rounds each,
    and the median counts, so that load drifting on a shared machine hits all alike."""
    ids = torch.randint(3, model.config.vocab_size, (rows, 8), generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in variants}
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).cache
        for _ in range(3):
            for name, variant in variants.items():
                with variant():
                    for _ in range(warmup):
                        model(input_ids=ids[:, :length], cache=cache, use_cache=True)
                    started = time.perf_counter()
                    for _ in range(calls):
                        model(input_ids=ids[:, :length], cache=cache, use_cache=True)
                    times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def _load_with_task(model_path: str):
    """(model, tokenizer, task, tool_config) of a checkpoint folder: the task it was trained on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .tasks import checkpoint_task, checkpoint_tool_config

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tool_config = checkpoint_tool_config(model_path, model.config)
    return model, tokenizer, checkpoint_task(tool_config), tool_config


def _alternating_decodes(decode, variants: tuple[str, ...], warm_up, rounds: int) -> tuple[dict, dict]:
    """``decode(variant)`` -> (results, seconds) for each variant: a short warm-up decode each (``warm_up(variant)``,
    first-call costs), then the variants alternate, ``rounds`` times each, and the median counts: a first run or
    load drifting on a shared machine would otherwise favour one. Returns (results, median seconds) by variant."""
    for variant in variants:
        warm_up(variant)
    seconds, results = {variant: [] for variant in variants}, {}
    for _ in range(rounds):
        for variant in variants:
            results[variant], elapsed = decode(variant)
            seconds[variant].append(elapsed)
    return results, {variant: statistics.median(times) for variant, times in seconds.items()}


def _bench_decode_shape(model_path: str, rows: int, digits: int, rounds: int = 3) -> dict:
    import random

    from .generation import generate_with_logits_processor, generate_with_tools

    model, tokenizer, task, _ = _load_with_task(model_path)
    rng = random.Random("bench-decode")
    instances = [task.sample(rng, digits) for _ in range(rows)]
    budget = 2 * len(instances[0].full_tokens())

    from .ops.kernels import cpu_scan_extension

    cpu_scan_extension()  # the one-off build / load of the C++ extension: not part of any timing
    prompts = [i.prompt for i in instances]

    def decode(path: str, batch_prompts=prompts, max_new_tokens=budget):
        """One whole tool decode along ``path``: its results and its wall time."""
        started = time.perf_counter()
        if path == "generate_with_processor":
            with torch.inference_mode():
                results = generate_with_logits_processor(model, tokenizer, batch_prompts, task.make_environment,
                                                         max_new_tokens=max_new_tokens)
        else:
            with _fused_step(path == "fast_loop"):
                results = generate_with_tools(model, tokenizer, batch_prompts, task.make_environment,
                                              max_new_tokens=max_new_tokens, progress=False)
        return results, time.perf_counter() - started

    paths = ("fast_loop", "fast_loop_unfused_step", "generate_with_processor")
    short = [task.sample(random.Random("warm-up"), 5).prompt]
    results, seconds = _alternating_decodes(decode, paths, lambda path: decode(path, short, 400), rounds)
    fast_s, unfused_s, slow_s = (seconds[path] for path in paths)
    fast, unfused, slow = (results[path] for path in paths)
    tokens = sum(len(r.generated_tokens) for r in fast)
    return {
        "what": f"greedy tool decoding of {rows} {task.name} instances of size {digits}, batch {rows}, "
        f"median of {rounds} alternating rounds after a warm-up",
        "traces_identical": all(a.tokens == b.tokens for a, b in zip(fast, slow, strict=True)),
        "traces_identical_fused_vs_unfused_step": all(a.tokens == b.tokens for a, b in zip(fast, unfused, strict=True)),
        "trace_tokens": tokens,
        "speedup_fast_loop_vs_generate": round(slow_s / fast_s, 2),
        "speedup_fused_step_vs_unfused": round(unfused_s / fast_s, 2),
        "fast_loop_tokens_per_s_per_row": round(tokens / fast_s / rows, 1),
        "fast_loop_unfused_step_tokens_per_s_per_row": round(tokens / unfused_s / rows, 1),
        "seconds": {
            "fast_loop": round(fast_s, 3), "fast_loop_unfused_step": round(unfused_s, 3),
            "generate_with_processor": round(slow_s, 3),
        },
    }


def _bench_kv_cache(model_path: str, rows: int, rounds: int) -> dict:
    """An attention baseline's tool decode through generate(), static KV cache vs dynamic, and through the fast
    tool loop, on its in-place KV layers (generation/kv_cache.py) and on transformers' DynamicLayer, on ``rows``
    instances of its task at twice its largest training size (traces must be identical)."""
    import random

    from .evaluation import decode_budget
    from .generation import generate_with_logits_processor, generate_with_tools, tool_loop

    model, tokenizer, task, tool_config = _load_with_task(model_path)
    train_max_size = tool_config.get("train_max_size") or task.default_train_max_size
    size = 2 * train_max_size
    instances = [task.sample(random.Random(f"bench-kv-cache-{row}"), size) for row in range(rows)]
    budget = max(decode_budget(instance) for instance in instances)

    prompts = [i.prompt for i in instances]

    def decode(path: str, batch_prompts=prompts, max_new_tokens=budget):
        started = time.perf_counter()
        if path.startswith("fast_loop"):
            # fast_loop_dynamic_kv: the loop on transformers' own DynamicLayer, which copies the cache per token
            with (mock.patch.object(tool_loop, "use_growing_kv_layers", lambda cache: 0)
                  if path == "fast_loop_dynamic_kv" else contextlib.nullcontext()):
                results = generate_with_tools(model, tokenizer, batch_prompts, task.make_environment,
                                              max_new_tokens=max_new_tokens, progress=False)
        else:
            with torch.inference_mode():
                results = generate_with_logits_processor(model, tokenizer, batch_prompts, task.make_environment,
                                                         max_new_tokens=max_new_tokens, cache_implementation=path)
        return results, time.perf_counter() - started

    paths = ("static", "dynamic", "fast_loop", "fast_loop_dynamic_kv")
    short = [task.sample(random.Random("warm-up"), train_max_size).prompt]
    results, seconds = _alternating_decodes(decode, paths, lambda path: decode(path, short, 64), rounds)
    static_s, dynamic_s, fast_s, fast_dynamic_kv_s = (seconds[path] for path in paths)
    tokens = sum(len(r.generated_tokens) for r in results["static"])
    return {
        "what": f"greedy tool decoding of {rows} {task.name} instances of size {size} (twice the training size), "
                f"batch {rows}, median of {rounds} alternating rounds after a warm-up: generate() with a static and "
                "a dynamic KV cache, and the fast tool loop on in-place and on transformers' KV layers",
        "model_type": model.config.model_type,
        "traces_identical": [r.tokens for r in results["static"]] == [r.tokens for r in results["dynamic"]],
        "traces_identical_fast_loop_vs_generate": [r.tokens for r in results["static"]]
        == [r.tokens for r in results["fast_loop"]] == [r.tokens for r in results["fast_loop_dynamic_kv"]],
        "trace_tokens": tokens,
        "observation_fraction": round(sum(r.num_observation_tokens for r in results["static"]) / max(tokens, 1), 2),
        "speedup_static_vs_dynamic_cache": round(dynamic_s / static_s, 2),
        "speedup_fast_loop_vs_static_generate": round(static_s / fast_s, 2),
        "speedup_growing_vs_dynamic_kv_layers_in_the_fast_loop": round(fast_dynamic_kv_s / fast_s, 2),
        "seconds": {path: round(seconds[path], 3) for path in paths},
    }


def bench_ragged_feed(model_path: str, *, size: int | None = None, rows: int = 16, rounds: int = 3) -> dict:
    """The fast tool loop's feeds on a recurrent checkpoint (generation/tool_loop.py): ragged, each row its own
    queue in right-padded chunks, its programs (``Tool.blocks``: the code sandbox's ``run``) on tool threads while
    the other rows decode; ragged with every command in line; in step, every row the same number of tokens. On
    ``rows`` instances of its task at ``size`` (default: its largest training size). Traces must be identical;
    forwards are counted."""
    import random

    from .generation import generate_with_tools
    from .generation.tool_loop import default_tool_threads, padding_keeps_state

    model, tokenizer, task, tool_config = _load_with_task(model_path)
    if not padding_keeps_state(model):
        raise ValueError(f"bench ragged: {model_path} is a {model.config.model_type}; the ragged feed is for models "
                         "whose padding leaves their cache as it was (tool_mamba, tool_rnn)")
    size = size or tool_config.get("train_max_size") or task.default_train_max_size
    instances = [task.sample(random.Random(f"bench-ragged-{row}"), size) for row in range(rows)]
    prompts = [instance.prompt for instance in instances]
    budget = 4 * max(len(instance.full_tokens()) for instance in instances)
    forward, forwards = model.forward, {}
    # the tool threads the default would take here, or one if it takes none (torch's threads fill every core)
    threads_by_default = default_tool_threads(model, rows)
    threads = threads_by_default or 1
    options = {"ragged": {"ragged_feed": True, "tool_threads": threads},
               "ragged_inline": {"ragged_feed": True, "tool_threads": 0}, "in_step": {"ragged_feed": False}}

    def decode(feed: str, batch_prompts=prompts, max_new_tokens=budget):
        calls = []
        model.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
        started = time.perf_counter()
        try:
            results = generate_with_tools(model, tokenizer, batch_prompts, task.make_environment,
                                          max_new_tokens=max_new_tokens, progress=False, **options[feed])
        finally:
            model.forward = forward
        forwards[feed] = len(calls)
        return results, time.perf_counter() - started

    feeds = tuple(options)
    results, seconds = _alternating_decodes(decode, feeds, lambda feed: decode(feed, prompts[:2], 64), rounds)
    tokens = sum(len(r.generated_tokens) for r in results["in_step"])
    return {
        "what": f"greedy tool decoding of {rows} {task.name} instances of size {size}, batch {rows}, median of "
                f"{rounds} alternating rounds after a warm-up: the fast loop's ragged feed (with its programs on "
                "tool threads, and with every command in line) vs its in-step feed",
        "traces_identical": all([r.tokens for r in results[feed]] == [r.tokens for r in results["in_step"]]
                                for feed in feeds),
        "trace_tokens": tokens,
        "observation_fraction": round(sum(r.num_observation_tokens for r in results["in_step"]) / max(tokens, 1), 2),
        "tool_threads": threads,
        "tool_threads_by_default": threads_by_default,
        "forwards": forwards,
        "speedup_ragged_vs_in_step": round(seconds["in_step"] / seconds["ragged"], 2),
        "speedup_tool_threads_vs_inline": round(seconds["ragged_inline"] / seconds["ragged"], 2),
        "seconds": {feed: round(seconds[feed], 3) for feed in feeds},
    }


#: How the runner runs the script (in sandbox_process.RUNNER), and how it did before: through runpy, whose imports
#: slowed every start-up. bench_sandbox swaps the first for the second.
_RUNNER_EXEC = """        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
        main = type(sys)("__main__")
        main.__file__ = path
        sys.modules["__main__"] = main
        exec(code, main.__dict__)
"""
_RUNPY_EXEC = """        import runpy
        runpy.run_path(path, run_name="__main__")
"""


def bench_sandbox(quick: bool = False) -> dict:
    """The code sandbox's ``run`` (a confined Python process per program, tools/sandbox_process.py) on a one-line
    program: as shipped; waiting for the exit by polling with sleeps instead of on a pidfd; with the runner
    running the script through ``runpy.run_path`` instead of by itself; and, where runs get a cgroup of their
    own, without it. The variants take turns, two runs each, and the second is timed: a decode runs one variant
    all along, and the first run after a switch can cost more (~10 ms after a switch to a cgroup, here)."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from .tools import sandbox_process

    confinement = sandbox_process.detect_confinement()
    limits = sandbox_process.Limits()
    runs = 5 if quick else 40
    assert _RUNNER_EXEC in sandbox_process.RUNNER, "bench_sandbox: update _RUNNER_EXEC to the runner's code"
    polling = {"_wait_unreaped": sandbox_process._poll_unreaped}
    runpy = {"RUNNER": sandbox_process.RUNNER.replace(_RUNNER_EXEC, _RUNPY_EXEC)}
    variants = {  # name: (patches of sandbox_process, confinement)
        "shipped": ({}, confinement),
        "polling_wait": (polling, confinement),
        "runpy_runner": (runpy, confinement),
        "both_before": (polling | runpy, confinement),  # the sandbox before either change
    }
    if confinement.cgroups is not None:
        variants["without_cgroup"] = ({}, dataclasses.replace(confinement, cgroups=None))
    seconds = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "main.py").write_text("print(1)\n")
        Path(directory, "main.py").chmod(0o644)
        Path(directory).chmod(0o755)  # readable by the unprivileged user the program may run as
        for _ in range(runs):
            for name, (patches, confined) in variants.items():
                with mock.patch.multiple(sandbox_process, **patches) if patches else contextlib.nullcontext():
                    for _ in range(2):
                        started = time.perf_counter()
                        result = sandbox_process.run_script(directory, "main.py", limits, confined)
                    seconds[name].append(time.perf_counter() - started)
                    assert result.output == b"1\n", result.output
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    report = {
        "what": f"one `run` of a one-line program, median of {runs} turns each, the second of two runs in a row "
                "timed: as shipped (the exit waited for on a pidfd, the script run by the runner itself), with the "
                "exit polled with sleeps, with the script run through runpy, with both (the sandbox before either "
                "change), and without the run's own cgroup (where runs get one)",
        "confinement": confinement.describe(),
        "speedup_pidfd_vs_polling_wait": round(medians["polling_wait"] / medians["shipped"], 2),
        "speedup_own_exec_vs_runpy_runner": round(medians["runpy_runner"] / medians["shipped"], 2),
        "speedup_shipped_vs_both_before": round(medians["both_before"] / medians["shipped"], 2),
    }
    if "without_cgroup" in medians:
        report["cost_of_the_cgroup"] = round(medians["shipped"] / medians["without_cgroup"], 2)
    report["seconds"] = {name: round(median, 4) for name, median in medians.items()}
    return report


#: (task, task kwargs, largest training size, batch): the repo's Mamba training configs
_TRAINING_BATCHES = [
    ("hanoi_recursive", {}, 7, 16), ("logical_graph", {"print_output": True}, 10, 32),
    ("coding_interactive", {}, 16, 8), ("multiplication", {"k": 2}, 10, 32), ("addition", {}, 5, 64),
]


def bench_train_step(quick: bool = False) -> dict:
    """One training step's forward+backward, whole batch vs cut into micro-batches
    (``TrainConfig.micro_batch_tokens``), on the batches of the repo's Mamba configs (2-layer d_model 64); the
    gradients must agree. Batches whose lengths spread (Hanoi: 2^n) gain most."""
    batches, caps = ([("addition", {}, 5, 16)], (None, 400)) if quick else (_TRAINING_BATCHES, (None, 16384, 4096))
    return {
        "what": "forward+backward of one training batch of a 2-layer d_model 64 Mamba, whole vs micro-batches of at "
                "most N padded tokens (micro_batch_tokens), median of 3",
        "tasks": {
            " ".join([task, *(f"{key}={value}" for key, value in kwargs.items())]) + f" <= {size}, batch {batch_size}":
            _bench_micro_batches(task, kwargs, size, batch_size, caps) for task, kwargs, size, batch_size in batches
        },
    }


def _bench_micro_batches(task_name: str, task_kwargs: dict, size: int, batch_size: int, caps) -> dict:
    from accelerate import Accelerator

    from .data import micro_batches
    from .tasks import get_task
    from .tokenization import build_char_tokenizer
    from .training import TrainConfig, accumulate_gradients, batch_for_step, build_model, target_count

    config = TrainConfig(output_dir="unused", task=task_name, task_kwargs=task_kwargs, train_max_size=size,
                         batch_size=batch_size,
                         model_kwargs={"hidden_size": 64, "num_hidden_layers": 2, "state_size": 16, "expand": 2})
    tokenizer = build_char_tokenizer()
    model = build_model(config, tokenizer).train()
    batch = batch_for_step(config, get_task(task_name, **task_kwargs), tokenizer, step=0)
    targets = target_count(batch)
    accelerator = Accelerator(cpu=True)
    variants, grads = {}, {}
    for cap in caps:
        parts = micro_batches(batch, cap)

        def step(parts=parts):  # this iteration's parts, bound explicitly (B023)
            model.zero_grad(set_to_none=True)
            accumulate_gradients(accelerator, model, parts, targets=targets, world=1)

        seconds = _median_time(step, repeats=3)
        grads[cap] = torch.cat([p.grad.flatten() for p in model.parameters()])
        variants[str(cap)] = {"micro_batches": len(parts), "padded_tokens": sum(p["input_ids"].numel() for p in parts),
                              "seconds": round(seconds, 3)}
    for cap, row in zip(caps, variants.values(), strict=True):
        row["speedup_vs_whole_batch"] = round(variants["None"]["seconds"] / row["seconds"], 2)
        row["max_gradient_difference_relative"] = float((grads[cap] - grads[None]).abs().max()
                                                        / grads[None].abs().max())
    return {"real_tokens": int(batch["attention_mask"].sum()), "micro_batch_tokens": variants}


def run_benchmarks(what: str, *, model_path: str, quick: bool = False, size: int | None = None) -> dict:
    report = {}
    if what == "ragged":  # not part of "all": a decode of the checkpoint's own task, whose size is given
        report["ragged_feed"] = bench_ragged_feed(model_path, size=size, rows=2 if quick else 16,
                                                  rounds=1 if quick else 3)
    if what in ("scan", "all"):
        report["scan"] = bench_scan(quick)
    if what in ("sandbox", "all"):
        report["sandbox"] = bench_sandbox(quick)
    if what in ("train", "all"):
        report["train_step"] = bench_train_step(quick)
    if what in ("decode", "all"):
        report["decode"] = bench_decode(model_path, quick)
    return report
