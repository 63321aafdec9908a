"""The fast tool loop: batched tool-augmented decoding for models with a recurrent (or KV) cache.

Every batch row keeps a queue of tokens still to be fed to the model: normally the one token it just
sampled, after a command also the tool's observation. Rows fall out of step as soon as their observations
differ in length, so how a forward feeds the queues decides the speed:

- **ragged** (ToolMamba, ToolRNN: models whose padding leaves the state as it was): each row feeds its own
  queue, up to ``RAGGED_MAX_WIDTH`` tokens, in one right-padded forward, so an observation costs one forward
  whatever the other rows are doing. Used when such a chunk is at least ``RAGGED_MIN_WIDTH`` wide and at least
  ``RAGGED_MIN_FILL`` tokens, not padding: a narrow or mostly padded chunk costs more than one-token steps (the
  fused step kernel). ``toolssm bench ragged``: before tool threads, 1.11x faster on interactive coding decodes
  at n = 16 (87% of their tokens are observations), with half the forwards; 1.02x on Hanoi; additions never go
  ragged. With them (below), 1.59x on coding.
- **in step** (every model, attention baselines included): every row feeds the same number of tokens, the
  shortest queue's length; a row's observation goes in one token a forward while the other rows decode.

With the ragged feed, a command that waits on another process (``Tool.blocks``: the code sandbox's ``run``) runs
on a worker thread, and its row is fed padding until the observation is back while the other rows decode: the
programs run on the other cores instead of stopping the decode (1.40x faster on coding at n = 16 with one torch
thread and one tool thread on 2 cores; ``default_tool_threads``).

The feeds give the same traces, tool threads or not (tested). Finished rows are dropped from the batch (and the
cache) so long tails cost only what they use. Memory is flat in the trace length: the model keeps its fixed-size
state, the tool environment keeps the trace as token strings. Attention models (transformers' KV caches) work too;
their full-attention cache layers append in place (``kv_cache.py``).

Greedy decoding here and through :class:`ToolCallingLogitsProcessor` in ``model.generate()`` give the
same traces (tested).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..tools.base import EnvironmentFactory, StopReason
from .kv_cache import use_growing_kv_layers
from .result import ToolGenerationResult
from .vocabulary import ProtocolVocabulary, check_prompts

#: The ragged feed's widest forward (tokens per row): a longer observation takes several forwards, which bounds
#: the padding that the other rows' one-token queues add to each. These three: `toolssm bench ragged`.
RAGGED_MAX_WIDTH = 64
#: The least share of a ragged chunk that must be tokens, not padding: a padded chunk costs per position
#: (tokens and padding alike) a fraction of what a one-token step costs per token.
RAGGED_MIN_FILL = 0.5
#: The narrowest ragged chunk: shorter chunks with padding cost more than as many one-token steps.
RAGGED_MIN_WIDTH = 8


def _ragged_width(queued: list[int]) -> int:
    """The ragged feed's width for rows with these queue lengths: the widest (up to ``RAGGED_MAX_WIDTH``) whose
    chunk is at least ``RAGGED_MIN_FILL`` tokens, not padding; the shortest queue (no padding) if none is wider."""
    best = min(queued)
    for width in sorted({min(n, RAGGED_MAX_WIDTH) for n in queued if n >= RAGGED_MIN_WIDTH}):
        tokens = sum(min(n, width) for n in queued)
        if width > best and tokens >= RAGGED_MIN_FILL * width * len(queued):
            best = width
    return best


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_tool_threads(model: PreTrainedModel, rows: int) -> int:
    """Tool threads for a decode of ``rows`` rows: one per core the model's forwards leave free, at most one a row.
    On the CPU torch's own threads take ``torch.get_num_threads()`` cores; a program on one of them stalls every
    forward (`toolssm bench ragged` on coding, 2 cores: one tool thread is 1.40x faster than none beside 1 torch
    thread, 0.81x beside 2; eval/results/bench_ragged_coding*.json)."""
    cores = available_cores()
    free = cores if model.device.type == "cuda" else cores - torch.get_num_threads()
    return max(0, min(free, rows))


def padding_keeps_state(model: PreTrainedModel) -> bool:
    """Whether ``model`` can take right-padded chunks on its cache (``attention_mask`` 0 leaves the state as it
    was): our recurrent models declare it. Attention models would cache the padding's keys and values."""
    return bool(getattr(model, "_padding_keeps_state", False))


def _next_chunk(queues: list[deque], waiting: list[bool], ragged: bool, pad_id: int,
                device) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Pop the next forward's tokens from the active rows' queues: the ids (rows, width), the mask (rows, width;
    None without padding) and how many tokens each row gave. Ragged: each row its own number, right-padded (a row
    ``waiting`` on its tool only padding); in step: every row the shortest queue's length."""
    queued = [len(queue) for queue in queues]
    free = [n for n, held in zip(queued, waiting, strict=True) if not held]  # the rows no tool holds
    width = _ragged_width(free) if ragged else min(queued)
    fed = [min(n, width) for n in queued]
    ids = [[queue.popleft() for _ in range(n)] + [pad_id] * (width - n) for queue, n in zip(queues, fed, strict=True)]
    mask = None  # (rows, width), 1 = token, 0 = padding
    if min(fed) < width:
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in fed], device=device)
    return torch.tensor(ids, device=device), mask, fed  # (rows, width)


def _resolve_feed(model: PreTrainedModel, ragged_feed: bool | None, tool_threads: int | None,
                  rows: int) -> tuple[bool, int]:
    """``generate_with_tools``' ``ragged_feed`` and ``tool_threads``, defaults filled in and checked."""
    if ragged_feed is None:
        ragged_feed = padding_keeps_state(model)
    elif ragged_feed and not padding_keeps_state(model):
        raise ValueError(
            f"generate_with_tools: ragged_feed=True needs a model whose padding leaves its cache as it was; "
            f"{type(model).__name__} does not declare it (_padding_keeps_state). Leave ragged_feed unset."
        )
    if tool_threads is not None and tool_threads < 0:
        raise ValueError(f"tool_threads must be >= 0, got {tool_threads}")
    if not ragged_feed:
        return False, 0  # in step, every row needs a token in every forward: nothing to decode while one waits
    return True, default_tool_threads(model, rows) if tool_threads is None else tool_threads


@torch.inference_mode()
def generate_with_tools(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Sequence[str]],
    env_factory: EnvironmentFactory,
    *,
    max_new_tokens: int = 100_000,
    time_budget: float | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    on_token=None,
    ragged_feed: bool | None = None,
    tool_threads: int | None = None,
) -> list[ToolGenerationResult]:
    """Decode every prompt with its own tool environment; return one :class:`ToolGenerationResult` per prompt.

    Args:
        prompts: strings (tokenized with ``tokenizer``) or lists of token strings.
        env_factory: builds a fresh ``ToolEnvironment`` per row, e.g. ``task.make_environment``.
        max_new_tokens: a row stops once its trace has this many tokens after the prompt (model tokens and
            observations); the observation of its last command is kept whole, so a trace can pass the cap
            by that observation (as in the ``generate()`` path, where ``max_new_tokens`` counts the same).
        time_budget: seconds; rows still running then stop with ``StopReason.TIME_BUDGET``.
        on_token: optional ``callback(row, token, role)`` for every trace token after the prompt, model
            tokens and observations alike (streaming, e.g. the CLI).
        do_sample, temperature, generator: sample instead of taking the argmax; each row draws from its own
            generator, seeded from ``generator``, so its trace is the same with every feed and tool threads or not.
        progress: show a tqdm bar (default: when more than 2,000 tokens may be decoded).
        ragged_feed: feed each row its own queue in right-padded forwards (the module docstring); default: when
            the model supports it (:func:`padding_keeps_state`). ``False`` keeps all rows in step.
        tool_threads: worker threads for commands that wait on another process (the module docstring); only with
            the ragged feed. Default: :func:`default_tool_threads`, one per core the forwards leave free. ``0``
            runs every command in line, as the in-step feed does.
    """
    check_prompts(prompts)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 to sample, got {temperature} "
                         "(do_sample=False decodes greedily)")
    ragged_feed, tool_threads = _resolve_feed(model, ragged_feed, tool_threads, len(prompts))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model.device
    vocabulary = ProtocolVocabulary(tokenizer)
    envs, queues = [], []
    for prompt in prompts:
        prompt_ids = vocabulary.prompt_ids(prompt)
        env = env_factory()
        env.reset([vocabulary.id_to_token[i] for i in prompt_ids])
        envs.append(env)
        queues.append(deque(prompt_ids))
    results: list[ToolGenerationResult | None] = [None] * len(envs)
    produced = [0] * len(envs)  # trace tokens after the prompt, per row

    active = list(range(len(envs)))  # original row index of each batch position
    cache = None
    start = time.monotonic()
    show = progress if progress is not None else max_new_tokens * len(envs) > 2_000
    # The longest row's trace against max_new_tokens, a cap rather than a forecast: no time-left estimate.
    bar = tqdm(total=max_new_tokens, desc="decoding with tools", unit="tok", disable=not show, leave=False,
               bar_format="{desc}: {bar:20} {n_fmt}/{total_fmt} tok (cap) [{elapsed}, {rate_fmt}]")

    def finish(row: int, reason: StopReason | None) -> None:
        results[row] = ToolGenerationResult.from_environment(envs[row], reason)

    def stream(row: int, before: int) -> None:
        """Hand the trace tokens row ``row`` added since it had ``before`` to ``on_token``."""
        if on_token is not None:
            env = envs[row]
            for t, role in zip(env.tokens[before:], env.roles[before:], strict=True):
                on_token(row, t, role)

    def take(row: int, token_id: int, observation: list[str], before: int) -> None:
        """Row ``row`` generated ``token_id`` and its environment answered ``observation``: stream the new trace
        tokens, end the row or queue the token and the observation for the model."""
        env = envs[row]
        produced[row] += 1 + len(observation)
        stream(row, before)
        if env.stop_reason is not None:  # EOS, or the tool-call budget is spent
            finish(row, None)
        elif produced[row] >= max_new_tokens:
            finish(row, StopReason.MAX_TOKENS)
        else:
            queues[row].append(token_id)
            queues[row].extend(vocabulary.ids(observation))

    # Sampling: a generator per row, seeded from ``generator``, so that a row's samples depend on its own draws
    # alone, not on which forward the other rows or its tool thread reach a token at (timing, with tool threads).
    row_generators = []
    if do_sample:
        on = generator.device if generator is not None else "cpu"  # a CUDA generator draws on its device
        seeds = torch.randint(2**62, (len(envs),), generator=generator, device=on).tolist()
        row_generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    # Rows whose command runs on a tool thread: the step's future, the token and the trace length before it.
    waiting: dict[int, tuple[Future, int, int]] = {}
    pool = ThreadPoolExecutor(tool_threads, thread_name_prefix="tool") if tool_threads else None
    try:
        while active:
            # 1. Feed the active rows their queued tokens: each its own number (ragged, right-padded; a waiting
            #    row only padding), or all the shortest queue's length.
            feed, mask, fed = _next_chunk([queues[row] for row in active], [row in waiting for row in active],
                                          ragged_feed, pad_id, device)
            first_forward = cache is None
            outputs = model(input_ids=feed, cache=cache, use_cache=True, attention_mask=mask)
            cache = getattr(outputs, "cache", None)
            if cache is None:  # the next forward would silently start over from the new tokens alone
                raise TypeError(
                    f"generate_with_tools: {type(model).__name__}.forward(input_ids, cache=..., use_cache=True) "
                    "returned no cache; the fast loop needs one. Use model.generate() with ToolCallingLogitsProcessor."
                )
            if first_forward:  # attention models: append to the KV cache in place, not by copying all of it
                use_growing_kv_layers(cache)
            last = (torch.tensor(fed, device=device) - 1).clamp(min=0)  # (active,): each row's last fed token
            logits = outputs.logits[torch.arange(len(active), device=device), last].float()  # (active, vocab)
            logits = vocabulary.only_tokenizer_ids(logits)

            if time_budget is not None and time.monotonic() - start > time_budget:
                # every row ends now, even mid-observation: a long one (a printed codebase) must not outrun it
                for row, (future, _, before) in waiting.items():
                    future.result()  # the command's own time limit bounds this; its environment records it
                    stream(row, before)  # the command and its observation are in the trace: stream them too
                waiting.clear()
                for row in active:
                    finish(row, StopReason.TIME_BUDGET)
                break

            # 2. Rows whose queue is now empty (not feeding an observation, nor waiting for one) sample their next
            #    token and hand it to their tool environment: in line, or on a tool thread for a command that
            #    waits on another process.
            sampling = [(p, row) for p, row in enumerate(active) if not queues[row] and row not in waiting]
            if do_sample:
                probs = torch.softmax(logits / temperature, dim=-1)  # (active, vocab)
                next_ids = {p: int(torch.multinomial(probs[p], 1, generator=row_generators[row]))
                            for p, row in sampling}
            else:
                next_ids = dict(enumerate(logits.argmax(dim=-1).tolist()))
            for position, row in sampling:
                env, token_id = envs[row], next_ids[position]
                token, before = vocabulary.id_to_token[token_id], len(env.tokens)
                if pool is not None and env.blocks_on(token):
                    waiting[row] = (pool.submit(env.step, token), token_id, before)
                else:
                    take(row, token_id, env.step(token), before)

            # 3. Rows whose command has finished take its observation; while no row has tokens to feed, wait.
            while True:
                for row in [row for row, (future, _, _) in waiting.items() if future.done()]:
                    future, token_id, before = waiting.pop(row)
                    take(row, token_id, future.result(), before)
                if not waiting or any(queues[row] and results[row] is None for row in active):
                    break
                wait([future for future, _, _ in waiting.values()], return_when=FIRST_COMPLETED)
            bar.update(max(produced[row] for row in range(len(envs))) - bar.n)

            # 4. Drop finished rows from the batch and from the cache.
            keep = [position for position, row in enumerate(active) if results[row] is None]
            if len(keep) < len(active):
                if keep:
                    cache.reorder_cache(torch.tensor(keep, device=device))
                active = [active[p] for p in keep]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return results


__all__ = ["generate_with_tools"]
