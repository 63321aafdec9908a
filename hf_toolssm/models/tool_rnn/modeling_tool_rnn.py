"""ToolRNN: the paper's LSTM / GRU baselines as a transformers model, with the same API as ToolMamba.

embedding -> a stack of single-layer ``nn.LSTM`` / ``nn.GRU`` -> LM head. The layers are torch's own RNN
modules (cuDNN on GPU, the fused CPU kernels elsewhere); they are kept one module per layer so that every
layer's state lands in its own slot of transformers' ``DynamicCache`` (one "linear_attention" layer each),
which is what the fast tool loop and ``generate()`` carry between calls and reorder when rows finish.

What matters for tool use, as in ToolMamba:

- a multi-token forward on an existing cache continues from the cached state (tool observations are fed
  as one multi-token forward);
- padding never touches the state: with an ``attention_mask``, only the token positions of a row go
  through the RNN, so a left-padded prompt computes exactly what the unpadded prompt would.

Glossary: b batch, l length, e embedding_size, h hidden_size, s states per layer (2 for an LSTM: h and c;
1 for a GRU), v vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..recurrent_cache import resolve_cache, uses_cache
from .configuration_tool_rnn import ToolRNNConfig


class _TokensOnly:
    """Runs a padded batch through RNNs over its token positions only, so padding never touches the state.

    Each row's token positions are moved to the front in their order (a stable sort of the mask), packed
    with the row lengths, and moved back after the RNNs. Any padding pattern works (left, right, holes):
    a padded position is skipped, the state passes it unchanged. A row without tokens still needs one
    packed step (packing refuses length 0): its state is put back with :meth:`keep_empty_rows`.
    """

    def __init__(self, attention_mask: torch.Tensor):  # (b, l), 1 = token, 0 = padding
        self.mask = attention_mask.bool()  # (b, l)
        self.lengths = self.mask.sum(dim=1)  # (b,)
        self.empty_rows = self.lengths == 0  # (b,)
        # Token positions first, each group in its original order: order[b, j] = source position of slot j.
        self.order = torch.argsort((~self.mask).to(torch.int8), dim=1, stable=True)  # (b, l)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, length: int) -> _TokensOnly | None:
        """``None`` when there is nothing to skip (no mask, or every position a token): the fast path."""
        if attention_mask is None:
            return None
        if attention_mask.shape[1] < length:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} positions, the input has {length}")
        # A mask over past + new tokens (generate() on a cache) aligns with the input at its end.
        attention_mask = attention_mask[:, -length:]  # (b, l)
        if bool(attention_mask.all()):
            return None
        return cls(attention_mask)

    def pack(self, inputs: torch.Tensor) -> PackedSequence:  # (b, l, d)
        index = self.order[:, :, None].expand_as(inputs)  # (b, l, d)
        compact = inputs.gather(1, index)  # (b, l, d): each row's tokens first
        lengths = self.lengths.clamp(min=1).cpu()  # pack_padded_sequence wants CPU lengths >= 1
        return pack_padded_sequence(compact, lengths, batch_first=True, enforce_sorted=False)

    def unpack(self, packed: PackedSequence) -> torch.Tensor:
        compact, _ = pad_packed_sequence(packed, batch_first=True, total_length=self.mask.shape[1])  # (b, l, d)
        index = self.order[:, :, None].expand_as(compact)  # (b, l, d)
        outputs = torch.empty_like(compact).scatter_(1, index, compact)  # (b, l, d): back to the source positions
        # Zero the padded positions (and the one dummy step of a row without tokens).
        return outputs * self.mask[:, :, None].to(outputs.dtype)

    def keep_empty_rows(self, new_state: torch.Tensor, old_state: torch.Tensor | None) -> torch.Tensor:
        """A row without tokens keeps the state it came in with (zeros without a cache)."""
        if not bool(self.empty_rows.any()):
            return new_state
        old_state = torch.zeros_like(new_state) if old_state is None else old_state.to(new_state.dtype)
        return torch.where(self.empty_rows[:, None, None], old_state, new_state)  # (b, s, h)


def _store_state(cache: Cache, layer_idx: int, state: torch.Tensor) -> None:
    cache.update_recurrent_state(state, layer_idx)
    # transformers flags a linear-attention cache layer as holding a state only when its *conv* state is
    # written (Mamba writes both). An RNN has no conv state, so flag it here, or get_recurrent_state() would
    # keep returning None and every forward would restart from the initial state.
    cache.layers[layer_idx].has_previous_state[0] = True


def _init_rnn(rnn: nn.LSTM | nn.GRU) -> None:
    """torch's RNN init (uniform in +-1/sqrt(h)) for the weights, zero biases, and an LSTM forget-gate bias
    of 1 so a fresh LSTM starts out remembering (Jozefowicz et al., 2015). ``transformers.initialization``
    functions leave parameters loaded from a checkpoint alone."""
    bound = rnn.hidden_size**-0.5
    for name, param in rnn.named_parameters():
        if name.startswith("weight"):
            init.uniform_(param, -bound, bound)
        elif isinstance(rnn, nn.LSTM) and name.startswith("bias_ih"):
            bias = torch.zeros_like(param)  # (4h,), gates in torch's order i, f, g, o
            bias[rnn.hidden_size : 2 * rnn.hidden_size] = 1.0
            init.copy_(param, bias)  # a whole-tensor copy: a slice would lose the "already loaded" flag
        else:
            init.zeros_(param)


class ToolRNNLayer(GradientCheckpointingLayer):
    """One recurrent layer, and the layout of its state in the cache: (b, s, h), batch first so that
    ``cache.reorder_cache`` (an ``index_select`` on dim 0) drops or reorders rows. Under gradient checkpointing
    only its input is kept for the backward, which runs the layer again (no cache then: it would be written
    twice)."""

    def __init__(self, config: ToolRNNConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.is_lstm = config.cell_type == "lstm"
        input_size = config.embedding_size if layer_idx == 0 else config.hidden_size
        rnn_class = nn.LSTM if self.is_lstm else nn.GRU
        self.rnn = rnn_class(input_size, config.hidden_size, num_layers=1, batch_first=True)

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor | None = None, packed_as: PackedSequence | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (b, l, d), or with ``packed_as`` the data (tokens, d) of a PackedSequence laid out as that one;
        state (b, s, h) or None (zeros). Returns the outputs, in the same layout, and the new state (b, s, h).

        The packed layout travels beside a plain tensor, not as a PackedSequence argument: reentrant gradient
        checkpointing passes gradients back through the tensor arguments only."""
        hx = None
        if state is not None:
            hx = state.transpose(0, 1).to(inputs.dtype)  # (s, b, h); torch wants (num_layers=1, b, h) per state
            if torch.is_grad_enabled():  # the cache overwrites `state` in place after this forward: autograd saved it
                hx = hx.clone()
            hx = (hx[0:1].contiguous(), hx[1:2].contiguous()) if self.is_lstm else hx[0:1].contiguous()
        if packed_as is not None:
            outputs, hx = self.rnn(packed_as._replace(data=inputs), hx)
            outputs = outputs.data  # (tokens, h)
        else:
            outputs, hx = self.rnn(inputs, hx)  # (b, l, h)
        new_state = torch.cat(hx, dim=0) if self.is_lstm else hx  # (s, b, h)
        return outputs, new_state.transpose(0, 1).contiguous()  # (b, s, h)


class ToolRNNPreTrainedModel(PreTrainedModel):
    config_class = ToolRNNConfig
    config: ToolRNNConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ToolRNNLayer"]
    _is_stateful = True  # no assisted decoding: a recurrent state cannot be rolled back
    # attention_mask 0 leaves the cached state as it was: the fast tool loop feeds right-padded chunks
    _padding_keeps_state = True

    @torch.no_grad()
    def _init_weights(self, module):
        """transformers' default init for the embedding and the LM head, our own for the RNNs.

        The RNN modules themselves are matched (not ToolRNNLayer): transformers skips the init of a module
        without parameters of its own in a model that is not part of the library.
        """
        if isinstance(module, (nn.LSTM, nn.GRU)):
            _init_rnn(module)
        else:
            super()._init_weights(module)


@dataclass
class ToolRNNOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ToolRNNCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ToolRNNModel(ToolRNNPreTrainedModel):
    def __init__(self, config: ToolRNNConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList([ToolRNNLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (b, l)
        inputs_embeds: torch.Tensor | None = None,  # (b, l, e)
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        attention_mask: torch.Tensor | None = None,  # (b, l) or (b, past + l), 1 = token, 0 = padding
        past_key_values: Cache | None = None,  # transformers' usual name of `cache`
        **kwargs,
    ) -> ToolRNNOutput | tuple:
        cache = resolve_cache(cache, None, past_key_values, self.config)
        use_cache = uses_cache(use_cache, cache, self.config, self.training and self.gradient_checkpointing,
                               self.training)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("ToolRNNModel.forward: pass exactly one of `input_ids` or `inputs_embeds`")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)  # (b, l, e)
        if inputs_embeds.shape[1] == 0:
            raise ValueError("ToolRNNModel.forward: the input has no tokens (length 0)")
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)  # from here on, a cache exactly when use_cache

        tokens_only = _TokensOnly.from_mask(attention_mask, inputs_embeds.shape[1])
        packing = None if tokens_only is None else tokens_only.pack(inputs_embeds)  # PackedSequence | None
        hidden_states = inputs_embeds if packing is None else packing.data  # (b, l, e), or packed: (tokens, e)

        def unpack(data: torch.Tensor) -> torch.Tensor:  # -> (b, l, h)
            return data if packing is None else tokens_only.unpack(packing._replace(data=data))

        all_hidden_states = () if output_hidden_states else None
        for layer in self.layers:
            state = cache.get_recurrent_state(layer.layer_idx) if cache is not None else None  # (b, s, h) | None
            hidden_states, new_state = layer(hidden_states, state, packed_as=packing)
            if cache is not None:
                if tokens_only is not None:
                    new_state = tokens_only.keep_empty_rows(new_state, state)
                _store_state(cache, layer.layer_idx, new_state)
            if layer.layer_idx < len(self.layers) - 1:
                hidden_states = self.dropout(hidden_states)
            if output_hidden_states:
                all_hidden_states += (unpack(hidden_states),)
        hidden_states = unpack(hidden_states)  # (b, l, h)

        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden_states) if v is not None)
        return ToolRNNOutput(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden_states)


class ToolRNNForCausalLM(ToolRNNPreTrainedModel, GenerationMixin):
    # The embedding accessors and prepare_inputs_for_generation are ToolMambaForCausalLM's, copied as transformers
    # copies between model files, so each class reads whole (tests/test_modeling_tool_rnn.py keeps the copies equal).
    # Only tied when config.tie_word_embeddings (which needs embedding_size == hidden_size).
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: ToolRNNConfig):
        super().__init__(config)
        self.backbone = ToolRNNModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        self.backbone.set_input_embeddings(new_embeddings)

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, cache=None, attention_mask=None,
                                      is_first_iteration=False, **kwargs):
        # inputs_embeds named: generate() checks this signature for it before it takes inputs_embeds
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, cache=cache, attention_mask=attention_mask,
            is_first_iteration=is_first_iteration, **kwargs
        )
        # After the prompt the cache holds everything; the mask only matters for the (left-padded) prompt.
        if model_inputs.get("cache") is not None and not is_first_iteration:
            model_inputs["attention_mask"] = None
        return model_inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (b, l)
        attention_mask: torch.Tensor | None = None,  # (b, l)
        inputs_embeds: torch.Tensor | None = None,  # (b, l, e)
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,  # (b, l), -100 = no loss
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> ToolRNNCausalLMOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids, inputs_embeds=inputs_embeds, cache=cache, past_key_values=past_key_values, use_cache=use_cache,
            output_hidden_states=output_hidden_states, return_dict=True, attention_mask=attention_mask,
        )
        hidden_states = outputs.last_hidden_state  # (b, l, h)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype))  # (b, l, v)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up, float64 kept

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if not return_dict:
            output = (logits, *(v for v in (outputs.cache, outputs.hidden_states) if v is not None))
            return (loss, *output) if loss is not None else output
        return ToolRNNCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )


__all__ = ["ToolRNNForCausalLM", "ToolRNNLayer", "ToolRNNModel", "ToolRNNPreTrainedModel"]
