"""A "model" that replays known traces, to test the generation layer without training anything.

``ScriptedModel`` is a tiny ``PreTrainedModel`` + ``GenerationMixin`` built from reference traces (token ids:
prompt, model tokens and observations, in order). At every position its logits put all the mass on the
trace's next token given the tokens so far, so greedy decoding with the tools in the loop reproduces a trace
exactly, *if* the tools inject the observations the trace says; any other history gets ``off_trace_id``
(which then shows up in the decoded trace). After the end of a trace it predicts ``eos_token_id``.

The history of each row lives in the cache: a ``DynamicCache`` whose one (attention) layer stores the token
ids as keys, so both generation paths work unchanged: the fast loop (``model(input_ids=..., cache=...,
use_cache=True)`` with 1..N new tokens, right-padded when ragged, ``cache.reorder_cache(rows)`` to drop finished
rows) and stock ``model.generate()`` (left-padded prompts). ``[PAD]`` ids are skipped wherever they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.utils import ModelOutput

#: logit of every token but the scripted one: all the mass on one token, without inf arithmetic
_LOW = -1e4


@strict
class ScriptedConfig(PreTrainedConfig):
    model_type = "scripted_trace"

    vocab_size: int = 133
    num_hidden_layers: int = 1  # one cache layer, which holds the token history
    traces: list | None = None  # reference traces, each a list of token ids
    off_trace_id: int = 0
    pad_token_id: int | None = 0
    eos_token_id: int | None = 1
    bos_token_id: int | None = None


@dataclass
class ScriptedOutput(ModelOutput):
    logits: torch.Tensor | None = None
    cache: Cache | None = None


class ScriptedModel(PreTrainedModel, GenerationMixin):
    config_class = ScriptedConfig
    config: ScriptedConfig
    _padding_keeps_state = True  # padding never enters the history: the fast loop may feed ragged chunks

    def __init__(self, config: ScriptedConfig):
        super().__init__(config)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device and a dtype
        self.post_init()

    def next_token(self, history: list[int]) -> int:
        """The scripted next token after ``history`` (the row's tokens so far, without padding)."""
        for trace in self.config.traces or []:
            if trace[: len(history)] == history:
                return trace[len(history)] if len(history) < len(trace) else self.config.eos_token_id
        return self.config.off_trace_id

    def forward(
        self,
        input_ids: torch.LongTensor,  # (b, l)
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs,  # attention_mask, position_ids, ...: the history alone decides
    ) -> ScriptedOutput:
        if use_cache is not False:
            cache = cache if cache is not None else DynamicCache(config=self.config)
            ids = input_ids[:, None, :, None].float()  # (b, 1, l, 1): token ids as attention keys
            history, _ = cache.update(ids, ids, 0)  # (b, 1, past + l, 1)
            history = history[:, 0, :, 0].long()  # (b, past + l)
        else:
            cache, history = None, input_ids
        batch, length = input_ids.shape
        past = history.shape[1] - length
        logits = torch.full((batch, length, self.config.vocab_size), _LOW, device=input_ids.device)  # (b, l, v)
        pad = self.config.pad_token_id
        for row, ids in enumerate(history.tolist()):
            for position in range(length):
                # padding anywhere (left of generate()'s prompts, right of the fast loop's ragged chunks) is skipped
                tokens = [i for i in ids[: past + position + 1] if i != pad]
                logits[row, position, self.next_token(tokens)] = 0.0
        return ScriptedOutput(logits=logits, cache=cache)
