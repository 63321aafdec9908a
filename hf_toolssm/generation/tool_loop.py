"""The fast tool loop: batched tool-augmented decoding for models with a recurrent (or KV) cache.

Every batch row keeps a queue of tokens still to be fed to the model: normally the one token it just
sampled, after a command also the tool's observation. Each iteration feeds the same number of tokens to
every active row (the shortest queue), so all rows share one forward; when every row has an observation
pending, it goes in as one multi-token forward that continues the cache. Finished rows are dropped from
the batch (and the cache) so long tails cost only what they use. Memory is flat in the trace length: the
model keeps its fixed-size state, the tool environment keeps the trace as token strings. Attention models
(transformers' KV caches) work too; their full-attention cache layers append in place (``kv_cache.py``).

Greedy decoding here and through :class:`ToolCallingLogitsProcessor` in ``model.generate()`` give the
same traces (tested).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..tools.base import EnvironmentFactory, StopReason
from .kv_cache import use_growing_kv_layers
from .result import ToolGenerationResult
from .vocabulary import ProtocolVocabulary


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
        progress: show a tqdm bar (default: when more than 2,000 tokens may be decoded).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
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
    bar = tqdm(total=max_new_tokens, desc="decoding with tools", unit="tok", disable=not show, leave=False)

    def finish(row: int, reason: StopReason | None) -> None:
        results[row] = ToolGenerationResult.from_environment(envs[row], reason)

    while active:
        # 1. Feed every active row the same number of queued tokens (all of them if the queues are equal).
        width = min(len(queues[row]) for row in active)
        feed = torch.tensor([[queues[row].popleft() for _ in range(width)] for row in active], device=device)
        first_forward = cache is None
        outputs = model(input_ids=feed, cache=cache, use_cache=True)
        cache = getattr(outputs, "cache", None)
        if cache is None:  # the next forward would silently start over from the new tokens alone
            raise TypeError(
                f"generate_with_tools: {type(model).__name__}.forward(input_ids, cache=..., use_cache=True) "
                "returned no cache; the fast loop needs one. Use model.generate() with ToolCallingLogitsProcessor."
            )
        if first_forward:  # attention models: append to the KV cache in place, not by copying all of it
            use_growing_kv_layers(cache)
        logits = vocabulary.only_tokenizer_ids(outputs.logits[:, -1, :].float())  # (active, vocab)

        # 2. Rows whose queue is now empty sample their next token and hand it to their tool environment.
        if do_sample:
            probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1).tolist()
        else:
            next_ids = logits.argmax(dim=-1).tolist()
        keep = []
        out_of_time = time_budget is not None and time.monotonic() - start > time_budget
        for position, row in enumerate(active):
            env = envs[row]
            if out_of_time:  # even mid-observation: a long one (a printed codebase) must not outrun the budget
                finish(row, StopReason.TIME_BUDGET)
                continue
            if queues[row]:
                keep.append(position)  # still feeding an observation: nothing to sample yet
                continue
            token = vocabulary.id_to_token[next_ids[position]]
            before = len(env.tokens)
            observation = env.step(token)
            produced[row] += 1 + len(observation)
            if on_token is not None:
                for t, role in zip(env.tokens[before:], env.roles[before:], strict=True):
                    on_token(row, t, role)
            if env.stop_reason is not None:  # EOS, or the tool-call budget is spent
                finish(row, None)
                continue
            if produced[row] >= max_new_tokens:
                finish(row, StopReason.MAX_TOKENS)
                continue
            queues[row].append(next_ids[position])
            queues[row].extend(vocabulary.ids(observation))
            keep.append(position)
        bar.update(max(produced[row] for row in range(len(envs))) - bar.n)

        # 3. Drop finished rows from the batch and from the cache.
        if len(keep) < len(active):
            if keep:
                cache.reorder_cache(torch.tensor(keep, device=device))
            active = [active[p] for p in keep]
    bar.close()
    return results


__all__ = ["generate_with_tools"]
