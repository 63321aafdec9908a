"""Tool-augmented decoding inside stock ``model.generate()``, for any ``AutoModelForCausalLM``.

``generate()`` only lets a ``LogitsProcessor`` shape the next token's scores, so tool observations are
injected by *forcing*: after a command, the processor makes each observation token the only possible next
token, one step at a time, and the model's state (KV cache or recurrent state) carries on through them.
Each batch row has its own :class:`~hf_toolssm.tools.ToolEnvironment`.

    env_factory = task.make_environment
    processor = ToolCallingLogitsProcessor(tokenizer, env_factory)
    out = model.generate(input_ids, attention_mask=mask, logits_processor=[processor],
                         max_new_tokens=..., do_sample=False)
    results = processor.results(out)  # one ToolGenerationResult per row

or, for prompts as text or token lists, :func:`generate_with_logits_processor` does those steps.

Prompts must be left-padded with the tokenizer's pad token (as usual for decoder-only generation).
:func:`hf_toolssm.generation.generate_with_tools` does the same job faster, for any model with a cache (much
faster for recurrent ones).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from ..tools.base import EOS, EnvironmentFactory, StopReason
from .result import ToolGenerationResult
from .vocabulary import ProtocolVocabulary, check_prompts


class ToolCallingLogitsProcessor(LogitsProcessor):
    """Runs tools on the tokens ``generate()`` samples and forces their observations back in.

    One processor can serve several ``generate()`` calls in turn: each call starts over with fresh
    environments once :meth:`results` (or :meth:`reset`) has closed the one before. Greedy decoding or
    sampling: beam search reorders rows between steps, which the environments cannot follow (an error says so).
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, env_factory: EnvironmentFactory, time_budget: float | None = None
    ):
        """``time_budget``: seconds per ``generate()`` call, counted from its first step (the prompt's forward
        done) or from :meth:`start_clock`; rows still running then get a forced ``[EOS]`` and report
        ``StopReason.TIME_BUDGET``."""
        self.tokenizer = tokenizer
        self.time_budget = time_budget
        self.env_factory = env_factory
        self.vocabulary = ProtocolVocabulary(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.reset()

    def reset(self) -> None:
        """Forget the last ``generate()`` call: the next call starts with fresh environments."""
        self.envs = None
        self.call_over = False
        self._clock_started: float | None = None

    def start_clock(self) -> None:
        """Count the next call's time budget from now, e.g. just before ``generate()``, so that the prompt's
        forward counts too, as in :func:`~hf_toolssm.generation.generate_with_tools`."""
        self._clock_started = time.monotonic()

    def _start(self, input_ids: torch.LongTensor) -> None:
        """First call: the rows are the (left-padded) prompts."""
        self.envs, self.forced, self.finished, self.timed_out = [], [], [], []
        self.call_over = False
        self.started = self._clock_started if self._clock_started is not None else time.monotonic()
        self._clock_started = None
        for row in input_ids.tolist():
            start = 0
            while start < len(row) and row[start] == self.pad_id:
                start += 1
            if self.pad_id is not None and self.pad_id in row[start:] and self.pad_id != self.tokenizer.eos_token_id:
                raise ValueError("ToolCallingLogitsProcessor: a prompt holds padding after its first token; pad "
                                 "prompts on the left (tokenizer.padding_side = 'left'), as generate() expects of "
                                 "decoder-only models")
            env = self.env_factory()
            env.reset([self.vocabulary.id_to_token[i] for i in row[start:]])
            self.envs.append(env)
            self.forced.append(deque())
            self.finished.append(False)
            self.timed_out.append(False)
        self._mark_seen(input_ids)

    def _mark_seen(self, input_ids: torch.LongTensor) -> None:
        self.seen = input_ids.shape[1]
        self.previous = input_ids  # generate() appends by torch.cat: a new tensor every step, never this one

    def _continues_last_call(self, input_ids: torch.LongTensor) -> bool:
        """Within one generate() call each step brings one new token after the rows seen, which it repeats."""
        if self.envs is None or self.call_over or input_ids.shape != (len(self.envs), self.seen + 1):
            return False  # a first call, or one after results(), or another batch or length: a new call
        if torch.equal(input_ids[:, : self.seen], self.previous):
            return True
        raise RuntimeError(
            "ToolCallingLogitsProcessor: this step's rows do not continue the last step's. Beam search "
            "(num_beams > 1) reorders rows, which the tool environments cannot follow: decode greedily or sample. "
            "Starting another generate() call? Call results() or reset() first."
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._continues_last_call(input_ids):
            self._consume(input_ids[:, self.seen :].tolist())
            self._mark_seen(input_ids)
        else:
            self._start(input_ids)
        self.vocabulary.only_tokenizer_ids(scores)
        out_of_time = self.time_budget is not None and time.monotonic() - self.started > self.time_budget
        for row, env in enumerate(self.envs):
            if self.finished[row]:
                continue
            if out_of_time and not self.timed_out[row]:
                self.timed_out[row] = True
                self.forced[row] = deque([EOS])  # drop any pending observation: the row ends now
            if env.stop_reason is StopReason.MAX_TOOL_CALLS and not self.forced[row]:
                self.forced[row].append(EOS)  # the budget is spent: end the row cleanly
            if self.forced[row]:
                (token_id,) = self.vocabulary.ids([self.forced[row][0]])
                scores[row] = torch.finfo(scores.dtype).min
                scores[row, token_id] = 0.0
        return scores

    def _consume(self, new_ids: list[list[int]]) -> None:
        for row, ids in enumerate(new_ids):
            for token_id in ids:
                if self.finished[row]:
                    break
                token = self.vocabulary.id_to_token[token_id]
                if self.forced[row]:
                    expected = self.forced[row].popleft()
                    if [token_id] != self.vocabulary.ids([expected]):  # else the trace shows what the model did not see
                        raise RuntimeError(
                            f"ToolCallingLogitsProcessor: row {row} was forced {expected!r} but got {token!r}; a "
                            "logits processor after this one changed the choice: put this one last"
                        )
                    if expected == EOS:  # a forced end (tool-call budget or time budget)
                        self.finished[row] = True
                        continue
                    # The row got its forced observation token: env.step recorded it as an observation when
                    # the command ran, so it does not go to the environment again as a model token.
                    continue
                observation = self.envs[row].step(token)
                self.forced[row].extend(observation)
                if token == EOS:
                    self.finished[row] = True

    def results(self, sequences=None) -> list[ToolGenerationResult]:
        """One result per row (per returned sequence); rows that did not finish were cut by ``max_new_tokens``.
        Closes the call: the processor's next ``generate()`` starts afresh.

        Pass what ``generate()`` returned (its ``sequences``, or the whole output of
        ``return_dict_in_generate=True``): the last sampled token never reaches a logits processor, so only the
        returned sequences show it.
        """
        if self.envs is None:
            raise RuntimeError(
                "ToolCallingLogitsProcessor.results(): call model.generate(...) with this processor first"
            )
        sequences = getattr(sequences, "sequences", sequences)  # a GenerateOutput: its token ids
        if sequences is not None and sequences.shape[0] != len(self.envs):
            raise ValueError(f"ToolCallingLogitsProcessor.results(): {sequences.shape[0]} sequences for the "
                             f"{len(self.envs)} rows of the last generate() call; pass what that call returned")
        self.call_over = True
        if sequences is not None and sequences.shape[1] > self.seen:
            self._consume(sequences[:, self.seen :].tolist())
            self._mark_seen(sequences)
        return [
            ToolGenerationResult.from_environment(
                env, StopReason.TIME_BUDGET if timed_out else (None if done else StopReason.MAX_TOKENS)
            )
            for env, done, timed_out in zip(self.envs, self.finished, self.timed_out, strict=True)
        ]


def generate_with_logits_processor(
    model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str | Sequence[str]], env_factory: EnvironmentFactory,
    *, max_new_tokens: int, time_budget: float | None = None, **generate_kwargs,
) -> list[ToolGenerationResult]:
    """Tool-augmented decoding through stock ``model.generate()``: left-pad the prompts (text, or lists of
    token strings taken as they are; read as :func:`~hf_toolssm.generation.generate_with_tools` reads them),
    generate with a :class:`ToolCallingLogitsProcessor`, return one result per prompt (per returned sequence,
    with ``num_return_sequences``).

    Greedy unless ``generate_kwargs`` say otherwise; they go to ``generate()`` (e.g. ``streamer``). Not beam
    search: it reorders rows, which the tool environments cannot follow.
    """
    check_prompts(prompts)
    if generate_kwargs.get("num_beams", model.generation_config.num_beams or 1) > 1:
        raise ValueError("tool-augmented decoding takes greedy decoding or sampling, not beam search (num_beams > 1): "
                         "beams reorder rows between steps, and each row's tools have run on its own tokens")
    if not prompts:
        return []  # as generate_with_tools
    processor = ToolCallingLogitsProcessor(tokenizer, env_factory, time_budget=time_budget)
    rows = [processor.vocabulary.prompt_ids(prompt) for prompt in prompts]
    width = max(map(len, rows))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in rows], device=model.device)
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device)
    generate_kwargs.setdefault("do_sample", False)
    if getattr(model, "_can_compile_fullgraph", False):
        # transformers' attention models (GPT-NeoX, Mistral): a preallocated KV cache. The default dynamic
        # cache concatenates every layer's keys and values at every step, a copy that grows with the trace and
        # the batch; the static cache decodes the same tokens (tests/test_generation.py)
        generate_kwargs.setdefault("cache_implementation", "static")
    processor.start_clock()  # the budget covers the whole call, prompt included, as in generate_with_tools
    sequences = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, logits_processor=[processor],
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        **generate_kwargs,
    )
    return processor.results(sequences)
