"""Length generalization: decode with the tools in the loop at growing sizes and score as the paper does.

For each size: fresh test instances from the seeded test stream of ``hf_toolssm.data`` (a different
random stream from the one training draws from), greedy decoding with tools through the fast loop of
:func:`~hf_toolssm.generation.generate_with_tools` (recurrent and attention models alike: it decodes what
stock ``generate()`` + :class:`ToolCallingLogitsProcessor` does, faster), then the ``tool_trace_accuracy``
metric: answer exact match, whole-trace exact match, teacher-forced token accuracy; plus mean trace length
and decode throughput, and for tasks that change the world through their tools (coding) the pass rate:
whether the tools' final state (the sandbox's files) solves the instance.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import platform
import re
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import heldout_instances
from .generation import ToolGenerationResult, generate_with_tools
from .metrics import load_tool_trace_accuracy
from .tasks.base import UNSCORED_ROLES
from .tokenization import protocol_ids
from .tools.base import ARG_END, EOS, Role


@dataclasses.dataclass
class SizeResult:
    size: int
    samples: int
    answer_exact_match: float
    trace_exact_match: float
    #: None when the teacher-forced pass was skipped (``token_accuracy=False``): written as JSON null
    token_accuracy: float | None
    #: tokens after the prompt: the model's and the tools' observations
    mean_trace_tokens: float
    #: trace tokens per second of decoding, observations included (what the loop moved)
    decode_tokens_per_s: float
    seconds: float
    #: share of rows whose tools the decode left in a solved state (coding: the files pass), for tasks
    #: with ``checks_final_state``; None for tasks judged by their answer alone
    pass_rate: float | None = None
    #: the model's own tokens (thoughts, commands, outputs) per second: a coding trace is ~80% observations;
    #: None in results written before it was recorded
    model_tokens_per_s: float | None = None


@dataclasses.dataclass
class Mistake:
    """One model token the model gets wrong when fed the reference prefix."""

    position: int  # index into the instance's full token list (prompt included)
    context: str  # the text just before it
    expected: str
    predicted: str
    #: what the token belongs to: "output", "thought", or the command, by its tool tag and verb
    #: ("[code]open", "[find]"): which copies a model gets wrong (see :func:`segment_of`)
    segment: str = ""


def segment_of(tokens: Sequence[str], roles: Sequence[Role], t: int) -> str:
    """What token ``t`` belongs to: its role for thoughts and outputs; for a command token, the command's
    tool tag plus its verb when it has one (``[code]edit 2 ...`` -> ``"[code]edit"``, ``[find]v576`` ->
    ``"[find]"``, a one-token pointer command such as ``[pointer1.read()]`` -> itself)."""
    if roles[t] is not Role.COMMAND:
        return roles[t].value
    start = t  # back to the command's tool tag: the nearest token that is one, within the command
    while start > 0 and not _opens_command(tokens[start]) and roles[start - 1] is Role.COMMAND:
        start -= 1
    end = t  # on to the command's end, so the verb is read whole even when the mistake is inside it
    while end + 1 < len(tokens) and roles[end + 1] is Role.COMMAND and not _opens_command(tokens[end + 1]):
        end += 1
    verb = re.match(r"[a-z]+(?=[ \[]|$)", "".join(tokens[start + 1 : end + 1]))
    return tokens[start] + (verb.group() if verb else "")


def _opens_command(token: str) -> bool:
    """A tool tag such as ``[code]`` or ``[pointer1.read()]``; ``[/cmd]`` ends the command it is in."""
    return len(token) > 2 and token.startswith("[") and token.endswith("]") and token != ARG_END


def model_token_positions(roles: Sequence[Role]) -> list[int]:
    """Positions of the tokens a model writes (thoughts, commands, outputs): what training and teacher forcing
    score."""
    return [t for t in range(1, len(roles)) if roles[t] not in UNSCORED_ROLES]


@torch.inference_mode()
def teacher_forced_mistakes(model, tokenizer, instance, context_chars: int = 40) -> tuple[list[Mistake], int]:
    """The model tokens (thoughts, commands, outputs) of the reference trace that the model predicts wrongly
    when fed the reference prefix, and how many model tokens there are: where a model fails, not only how often."""
    tokens = instance.full_tokens()
    roles = instance.roles()
    ids = torch.tensor([protocol_ids(tokenizer, tokens)], device=model.device)  # (1, l)
    predicted = model(input_ids=ids).logits[0, :-1].argmax(-1).tolist()  # prediction for position t+1
    targets = ids[0].tolist()
    scored = model_token_positions(roles)
    mistakes = [
        Mistake(t, "".join(tokens[max(0, t - context_chars) : t])[-context_chars:], tokens[t],
                _protocol_token(tokenizer, predicted[t - 1]), segment_of(tokens, roles, t))
        for t in scored if predicted[t - 1] != targets[t]
    ]
    return mistakes, len(scored)


def _protocol_token(tokenizer, token_id: int) -> str:
    """A predicted id as the trace writes it: a pretrained tokenizer's own end-of-sequence token is ``[EOS]``."""
    return EOS if token_id == tokenizer.eos_token_id else tokenizer.convert_ids_to_tokens(token_id)


def first_mistakes(model, tokenizer, task, size: int, *, seed: int = 1234, limit: int = 20,
                   max_instances: int = 10) -> list[Mistake]:
    """Up to ``limit`` teacher-forced mistakes at ``size``, from the first ``max_instances`` test instances (the
    stream :func:`evaluate_length_generalization` decodes with the same ``seed``)."""
    mistakes: list[Mistake] = []
    for instance in heldout_instances(task, seed, size, max_instances):
        mistakes += teacher_forced_mistakes(model, tokenizer, instance)[0][: limit - len(mistakes)]
        if len(mistakes) >= limit:
            break
    return mistakes


def teacher_forced_token_accuracy(model, tokenizer, instance) -> float:
    """Share of the reference trace's model tokens the model predicts correctly when fed the reference prefix:
    the paper's "token accuracy"."""
    mistakes, scored = teacher_forced_mistakes(model, tokenizer, instance)
    return 1.0 - len(mistakes) / scored if scored else 1.0


def decode_budget(instance) -> int:
    """The trace tokens a decode of ``instance`` may take: twice its reference trace's, so a model that has
    left the algorithm (a coding agent editing the wrong file forever) stops in bounded time."""
    return 2 * (len(instance.full_tokens()) - len(instance.prompt)) + 16


def decode_instances(
    model, tokenizer, task, instances: Sequence, *, batch_size: int = 50, progress: bool = True,
    desc: str = "decoding",
) -> list[ToolGenerationResult]:
    """Greedy decodes of ``instances``, ``batch_size`` rows at a time, with the task's tools in the loop and each
    batch's decode budget (:func:`decode_budget`): what :func:`score_instances` scores, and what an analysis of
    the decodes themselves (``eval/decode_divergence.py``) reads."""
    decoded: list[ToolGenerationResult] = []
    for start in tqdm(range(0, len(instances), batch_size), desc=desc, leave=False, disable=not progress):
        chunk = instances[start : start + batch_size]
        # One budget per batch, its longest row's: a row that leaves the algorithm may run on to it, so a failing
        # row's length (mean_trace_tokens) depends on its batch. Every result on the page uses batches of 50 (the
        # CLI's default); a per-row cap would change how far a late-finishing coding agent may go, against them.
        budget = max(decode_budget(inst) for inst in chunk)
        # The fast loop for every model, attention baselines included: it decodes what generate() +
        # ToolCallingLogitsProcessor decodes (tests/test_generation.py), but feeds an observation as one forward
        # and drops finished rows, where generate() forces one token a step and carries every row to the end, and
        # its KV cache appends in place (generation/kv_cache.py). On the GPT-NeoX baselines it is 2.47x faster on
        # 16 logical-graph rows (25% of the trace observations; 1.59x of it from the KV appends) and 8x on 2
        # coding rows (82%, before the KV appends): `toolssm bench decode --model ...`,
        # eval/results/bench_decode_gpt_neox*.json. The more rows, the less it gains from observations: a
        # multi-token forward needs every row to have one pending, and otherwise the rows advance a token at a time.
        decoded += generate_with_tools(
            model, tokenizer, [inst.prompt for inst in chunk], task.make_environment,
            max_new_tokens=budget, progress=progress and budget > 50_000,
        )
    return decoded


@torch.inference_mode()
def warm_up(model) -> float:
    """One untimed two-token forward on a cache; returns its seconds. First-use costs land here instead of in the
    first timed decode: on the CPU, ToolMamba compiles its fused kernel on first use (about a minute on a fresh
    machine, cached by torch afterwards)."""
    started = time.monotonic()
    model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=model.device), use_cache=True)
    return time.monotonic() - started


def score_instances(
    model, tokenizer, task, instances: Sequence, *, size: int, batch_size: int = 50, token_accuracy: bool = True,
    metric=None, progress: bool = True,
) -> tuple[SizeResult, list[ToolGenerationResult]]:
    """Decode ``instances`` (all of one ``size``) in batches with the tools in the loop, and score them.

    Returns the scores and the decoded results (for callers that show a trace). ``metric``: a loaded
    ``tool_trace_accuracy`` module, to load it once for many calls.
    """
    if not instances:
        raise ValueError(f"score_instances: no instances of size {size} to score; ask for at least one sample")
    metric = metric or load_tool_trace_accuracy()
    warm_up(model)
    started = time.monotonic()
    decoded = decode_instances(model, tokenizer, task, instances, batch_size=batch_size, progress=progress,
                               desc=f"size {size}")
    seconds = time.monotonic() - started
    trace_tokens = [len(r.generated_tokens) for r in decoded]
    scores = metric.compute(
        predicted_traces=[r.generated_tokens for r in decoded],
        reference_traces=[inst.full_tokens()[len(inst.prompt) :] for inst in instances],
        answers_correct=[bool(task.check(inst, r.answer)) for inst, r in zip(instances, decoded, strict=True)],
        token_accuracies=[
            teacher_forced_token_accuracy(model, tokenizer, inst) if token_accuracy else None
            for inst in instances
        ],
        final_states_correct=[bool(task.check_final_state(inst, r.tools))
                              for inst, r in zip(instances, decoded, strict=True)] if task.checks_final_state else None,
    )
    result = SizeResult(
        size=size, samples=len(instances), seconds=round(seconds, 2),
        mean_trace_tokens=sum(trace_tokens) / len(trace_tokens),
        decode_tokens_per_s=round(sum(trace_tokens) / max(seconds, 1e-9), 1),
        model_tokens_per_s=round(sum(r.num_model_tokens for r in decoded) / max(seconds, 1e-9), 1),
        **scores,
    )
    return result, decoded


def evaluate_length_generalization(
    model, tokenizer, task, sizes: Sequence[int], *, samples: int = 100, seed: int = 1234,
    batch_size: int = 50, token_accuracy: bool = True, progress: bool = True, split: str = "test",
    on_result: Callable[[SizeResult], None] | None = None,
) -> list[SizeResult]:
    """Score ``model`` on ``task`` at every size; see the module docstring. ``split`` names the random
    stream of test instances (``hf_toolssm.data.heldout_instances``). Every size is checked before the first
    decode: a bad last size must not cost the hours the others took. ``on_result`` sees each size's result
    as soon as it is scored (``toolssm eval`` saves it there, so an interrupted run keeps its finished sizes)."""
    for size in sizes:
        task.validate_size(size, "test size")
    metric = load_tool_trace_accuracy()
    model.eval()
    results = []
    for size in tqdm(sizes, desc=f"{task.name}: sizes", disable=not progress):
        instances = heldout_instances(task, seed, size, samples, split=split)
        result, _ = score_instances(
            model, tokenizer, task, instances, size=size, batch_size=batch_size, token_accuracy=token_accuracy,
            metric=metric, progress=progress,
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def partial_results_path(out: str | Path) -> Path:
    """Where ``toolssm eval --out FILE.json`` keeps the sizes finished so far: FILE.partial.json, removed once
    FILE.json is written after the last size (so that FILE.json existing means the whole grid was scored)."""
    out = Path(out)
    return out.with_name(out.stem + ".partial.json")


def checkpoint_modified(folder: str | Path) -> str:
    """When a checkpoint's model was written (UTC; its weights and config.json, not a card or remote code written
    beside them later): tells a retrained model at the same path from the one an earlier evaluation scored."""
    files = [f for f in Path(folder).iterdir() if f.is_file()]
    model_files = [f for f in files if f.name == "config.json" or f.name.startswith(("model", "pytorch_model"))]
    newest = max((f.stat().st_mtime for f in model_files or files), default=0.0)
    return datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).isoformat(timespec="seconds")


def finished_sizes(partial: str | Path, *, model: str, task: str, seed: int, samples: int, token_accuracy: bool,
                   modified: str) -> dict[int, SizeResult]:
    """The sizes an interrupted ``toolssm eval`` of the same model (path and ``checkpoint_modified``), task,
    seed, samples and token-accuracy setting already scored (read from its partial file); empty when there is
    none or it was another run's."""
    partial = Path(partial)
    if not partial.exists():
        return {}
    payload = json.loads(partial.read_text())
    key = (payload.get("model"), payload.get("checkpoint_modified"), payload.get("task"), payload.get("seed"))
    if key != (model, modified, task, seed):
        return {}
    rows = [SizeResult(**row) for row in payload["results"]]
    return {r.size: r for r in rows if r.samples == samples and (r.token_accuracy is not None) == token_accuracy}


def provenance(command: str) -> dict[str, str]:
    """What a results file records beside its numbers: the command that wrote it, the machine, the date."""
    gpu = f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    return {
        "command": command,
        "machine": f"{platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, {gpu})",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(path: str | Path, results: Sequence[SizeResult], **header) -> None:
    """A JSON object: the header fields (model, task, command, machine, date, ...) and a ``results`` list."""
    payload = dict(header)
    payload["results"] = [dataclasses.asdict(r) for r in results]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


#: (line style, marker) of the first, second, ... curve that shares a colour: seeds of one model stay apart
#: even where they lie on top of each other.
_STYLES_WITHIN_A_COLOUR = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]


def plot_accuracy_vs_size(
    curves: dict[str, Sequence[SizeResult]], png_path: str | Path, *, metric: str = "trace_exact_match",
    title: str = "", train_max_size: int | None = None, ylabel: str | None = None,
    colour_groups: dict[str, str] | None = None,
) -> None:
    """Accuracy against size on a log x axis, one line per curve (``ylabel``: default, the metric's name).
    ``colour_groups`` maps a curve's name to a group (e.g. its model, with one curve per seed): a group's curves
    share a colour and differ in line style and marker. By default every curve is its own group."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The legend goes under the axes, where it cannot hide a point; the figure grows a line per legend row.
    # Two columns when there are many entries and they are short enough for half the figure's width.
    legend_entries = len(curves) + (train_max_size is not None)
    legend_columns = 2 if legend_entries > 4 and max(map(len, curves), default=0) <= 40 else 1
    legend_rows = -(-legend_entries // legend_columns)
    fig, ax = plt.subplots(figsize=(6.5, 3.6 + 0.22 * legend_rows), layout="constrained")
    colours, drawn_in_group = {}, collections.Counter()
    for name, results in curves.items():
        group = (colour_groups or {}).get(name, name)
        colour = colours.setdefault(group, f"C{len(colours) % 10}")
        linestyle, marker = _STYLES_WITHIN_A_COLOUR[drawn_in_group[group] % len(_STYLES_WITHIN_A_COLOUR)]
        drawn_in_group[group] += 1
        ax.plot([r.size for r in results], [getattr(r, metric) for r in results], color=colour, linestyle=linestyle,
                marker=marker, label=name)
    if train_max_size is not None:
        # black, not a colour of the cycle: the fourth curve is red
        ax.axvline(train_max_size, color="black", linestyle="--", linewidth=1, label="largest training size")
    ax.set(xscale="log", ylim=(-0.03, 1.03), xlabel="size (log scale)", ylabel=ylabel or metric.replace("_", " "))
    ax.set_title(textwrap.fill(title, 70), fontsize="medium")  # the results page's titles are long: wrap, not cut
    # Ticks at the tested sizes, written out ("1,000", not "10^3"; no minor labels such as "4 x 10^0").
    ax.set_xticks(sorted({r.size for results in curves.values() for r in results}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=legend_columns, fontsize="small", frameon=False)
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
