"""ToolMamba: Mamba-1 as a transformers model, with a cache that really continues.

Parameter names and the math are those of transformers' ``MambaForCausalLM`` (and of mamba-ssm's
``MambaLMHeadModel`` up to ``embedding`` -> ``embeddings``), so state dicts convert 1:1. The differences
that matter for tool use:

- a multi-token forward on an existing cache continues from the cached conv and SSM states (transformers'
  Mamba-1 restarts its scan from zero there). Tool observations are injected as one multi-token forward, so
  this is what keeps the model's memory across a tool call;
- padding (``attention_mask`` 0) leaves the conv and SSM states as they were, left of a fresh prompt or right of
  a chunk on a cache: the fast tool loop feeds rows different numbers of tokens in one forward;
- the scans dispatch per call to mamba-ssm / causal-conv1d CUDA kernels or to our CPU ops (``hf_toolssm.ops``).

Glossary: b batch, l length, d_model hidden size, d d_inner (= expand * d_model), n d_state,
r time_step_rank, k conv kernel width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ...ops.causal_conv1d import causal_conv1d_fn
from ...ops.kernels import use_causal_conv1d, use_mamba_ssm
from ...ops.mamba_step import mamba_step, mamba_step_ref
from ...ops.selective_scan import selective_scan_fn
from ..recurrent_cache import resolve_cache, uses_cache
from .configuration_tool_mamba import ToolMambaConfig


def _mask_padding(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of x (b, d, l): a token after left padding then convolves zeros, as it would
    convolve the zero initial state without the padding."""
    if attention_mask is None:
        return x
    return x * attention_mask[:, None, :].to(x.dtype)  # (b, d, l)


def _conv_state_at_last_token(
    x: torch.Tensor, conv_state: torch.Tensor | None, attention_mask: torch.Tensor, width: int
) -> torch.Tensor:
    """The conv state a row would have without its right padding: its last ``width`` inputs up to its last token.

    x: (b, d, l) conv inputs; conv_state: (b, d, width) the inputs before them, or None (zeros). A row without
    tokens keeps ``conv_state``."""
    batch, d, length = x.shape
    if conv_state is None:
        conv_state = x.new_zeros(batch, d, width)
    window = torch.cat([conv_state.to(x.dtype), x], dim=-1)  # (b, d, width + l)
    positions = torch.arange(1, length + 1, device=x.device)  # (l,)
    end = (attention_mask.to(torch.long) * positions).amax(dim=-1)  # (b,): 1 + the index of the row's last token
    index = end[:, None] + torch.arange(width, device=x.device)  # (b, width): window positions end .. end+width-1
    return window.gather(-1, index[:, None, :].expand(batch, d, width))  # (b, d, width)


def _padding_rows(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(b,) the rows of a chunk's mask (b, l) that are padding alone (the fast tool loop holds a row while its
    tool runs), or None when there are none."""
    if mask is None:
        return None
    padded = ~mask.bool().any(dim=1)  # (b,)
    return padded if bool(padded.any()) else None


def _check_padding(mask: torch.Tensor | None, length: int, on_cache: bool) -> None:
    """A ValueError for a mask the scan cannot honour: shorter than the chunk, padding between tokens, or left
    padding on a cache that holds a past (a token would convolve the pad). Left padding of a fresh prompt and
    right padding of a chunk (or a row of padding alone) are fine. A mask over more than the chunk is generate()'s
    over the whole sequence: only its prompt step matters, and there it is the chunk's own."""
    if mask is None or mask.shape[1] > length:
        return
    if mask.shape[1] < length:
        raise ValueError(f"attention_mask covers {mask.shape[1]} positions, the input has {length}")
    tokens = mask.bool()  # (b, l)
    rows = tokens.any(dim=1)  # (b,): rows with a token
    first = tokens.int().argmax(dim=1)  # (b,): each row's first token
    last = length - 1 - tokens.flip(1).int().argmax(dim=1)  # (b,): and its last
    if bool((rows & (last - first + 1 != tokens.sum(dim=1))).any()):
        raise ValueError("attention_mask has padding between tokens: ToolMamba takes left padding of a fresh prompt "
                         "and right padding of a chunk, not holes")
    if on_cache and bool((rows & (first > 0)).any()):
        raise ValueError("attention_mask left-pads a chunk on a cache that holds a past: the token after the pad "
                         "would convolve it; right-pad chunks on a cache")


class ToolMambaMixer(nn.Module):
    """The selective SSM block: in_proj -> causal conv -> selective scan (gated) -> out_proj."""

    def __init__(self, config: ToolMambaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.ssm_state_size = config.state_size
        self.conv_kernel_size = config.conv_kernel
        self.time_step_rank = int(config.time_step_rank)
        self.activation = config.hidden_act

        self.in_proj = nn.Linear(self.hidden_size, self.intermediate_size * 2, bias=config.use_bias)
        self.conv1d = nn.Conv1d(
            self.intermediate_size, self.intermediate_size, kernel_size=config.conv_kernel,
            groups=self.intermediate_size, padding=config.conv_kernel - 1, bias=config.use_conv_bias,
        )
        # Δ, B and C depend on the input: this is what makes the scan "selective".
        self.x_proj = nn.Linear(self.intermediate_size, self.time_step_rank + self.ssm_state_size * 2, bias=False)
        self.dt_proj = nn.Linear(self.time_step_rank, self.intermediate_size, bias=True)
        # A (through A_log, kept negative) and D are input-independent (S4D-real initialisation in _init_weights).
        self.A_log = nn.Parameter(torch.empty(self.intermediate_size, self.ssm_state_size))
        self.D = nn.Parameter(torch.empty(self.intermediate_size))
        self.out_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.use_bias)

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation of A, D and the Δ projection (identical to transformers and mamba-ssm). Through
        ``transformers.initialization``, which leaves a parameter loaded from a checkpoint alone: a checkpoint that
        lacks one of a mixer's parameters must not have the others reinitialised."""
        config = self.config
        A = torch.arange(1, self.ssm_state_size + 1, dtype=torch.float32, device=self.A_log.device)
        init.copy_(self.A_log, torch.log(A)[None, :].expand(self.intermediate_size, -1))  # (d, n)
        init.ones_(self.D)
        dt_init_std = self.time_step_rank**-0.5 * config.time_step_scale
        if config.time_step_init_scheme == "constant":
            init.constant_(self.dt_proj.weight, dt_init_std)
        else:
            init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        # Δ = softplus(bias) starts log-uniform in [time_step_min, time_step_max]: store softplus^-1 of it.
        dt = torch.exp(
            torch.rand(self.intermediate_size, device=self.dt_proj.bias.device)
            * (math.log(config.time_step_max) - math.log(config.time_step_min))
            + math.log(config.time_step_min)
        ).clamp(min=config.time_step_floor)
        init.copy_(self.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))

    def _can_use_fused_training_kernel(self, hidden_states, cache, attention_mask) -> bool:
        # Checked on every forward, decoding steps included: the cheap conditions go first.
        if not self.training or cache is not None or attention_mask is not None:
            return False
        # mamba_inner_fn reads x_proj / dt_proj / out_proj weights directly. If PEFT (LoRA) wrapped any of
        # them, the fused kernel would silently skip the adapter: use the unfused path instead.
        plain = all(type(m) is nn.Linear for m in (self.x_proj, self.dt_proj, self.out_proj, self.in_proj))
        return plain and use_mamba_ssm(hidden_states) is not None and use_causal_conv1d(hidden_states) is not None

    def forward(
        self,
        hidden_states: torch.Tensor,  # (b, l, d_model)
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,  # (b, l), 1 = token, 0 = padding
    ) -> torch.Tensor:  # (b, l, d_model)
        """Three paths, one result: the fused CUDA kernel (training, no cache), a loop of one-token steps (short
        chunks on a cache) and the chunked conv + scan (everything else, the reference for the other two)."""
        A = -torch.exp(self.A_log.float())  # (d, n)
        if self._can_use_fused_training_kernel(hidden_states, cache, attention_mask):
            return self._fused_forward(hidden_states, A)

        conv_state = cache.get_conv_state(self.layer_idx) if cache is not None else None  # (b, d, k-1) | None
        ssm_state = cache.get_recurrent_state(self.layer_idx) if cache is not None else None  # (b, d, n) | None
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2d, l)
        x, z = xz.chunk(2, dim=1)  # (b, d, l) each
        # The chunk's own mask. A mask over more than the chunk (generate() on a cache) is the prompt's: ignored.
        length = hidden_states.shape[1]
        mask = attention_mask if attention_mask is not None and attention_mask.shape[1] == length else None  # (b, l)

        if conv_state is not None and ssm_state is not None and self._steps_are_faster(length, hidden_states, mask):
            return self._step_loop_forward(x, z, conv_state, ssm_state, A, mask)
        return self._chunked_forward(x, z, cache, conv_state, ssm_state, A, mask)

    def _fused_forward(self, hidden_states: torch.Tensor, A: torch.Tensor) -> torch.Tensor:  # (b, l, d_model)
        """mamba-ssm's ``mamba_inner_fn``: projections, conv, scan and gate in one CUDA kernel, with its backward."""
        kernels = use_mamba_ssm(hidden_states)
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2d, l)
        return kernels.mamba_inner_fn(
            xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )  # (b, l, d_model)

    def _step_loop_forward(self, x, z, conv_state, ssm_state, A, mask) -> torch.Tensor:  # (b, l, d_model)
        """One ``_step`` per token, updating the cached states in place. x, z: (b, d, l); mask: (b, l) | None,
        each row all tokens or all padding (``_steps_are_faster`` checks)."""
        conv_weight = self.conv1d.weight.squeeze(1)  # (d, k)
        padded = _padding_rows(mask)  # (b,) | None
        if padded is not None:  # rows of padding alone keep their states: put them back after the steps
            kept = conv_state[padded].clone(), ssm_state[padded].clone()  # (p, d, k-1), (p, d, n)
        steps = [self._step(x[:, :, t], z[:, :, t], conv_state, ssm_state, conv_weight, A)
                 for t in range(x.shape[2])]  # l x (b, d_model)
        if padded is not None:
            conv_state[padded], ssm_state[padded] = kept
        return torch.stack(steps, dim=1)  # (b, l, d_model)

    def _chunked_forward(self, x, z, cache, conv_state, ssm_state, A, mask) -> torch.Tensor:  # (b, l, d_model)
        """The causal conv and the selective scan over the whole chunk, continuing from the cached states (if
        any) and writing the new ones back. x, z: (b, d, l); mask: (b, l) | None.

        Padding (mask 0) leaves the states as they were, so a row may be left-padded (a fresh prompt) or
        right-padded (the fast tool loop's ragged feed on a cache): padded inputs are zero, the conv state is
        read at each row's last token, and Δ = 0 on padding (exp(0 * A) = 1 keeps the SSM state, Δ B x = 0 adds
        nothing). A pad before a token on a non-empty cache is not supported: that token would convolve it."""
        # 1. Causal conv, continuing from the cached last k-1 inputs.
        x = _mask_padding(x, mask)  # (b, d, l)
        conv_input = x
        x, new_conv_state = causal_conv1d_fn(
            x, self.conv1d.weight.squeeze(1), self.conv1d.bias, initial_state=conv_state, activation=self.activation,
            return_final_state=True,
        )  # (b, d, l), (b, d, k-1)
        if mask is not None:
            new_conv_state = _conv_state_at_last_token(conv_input, conv_state, mask, self.conv_kernel_size - 1)

        # 2. Input-dependent Δ, B, C.
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, l, r + 2n)
        # (b, l, r), (b, l, n), (b, l, n)
        dt, B, C = torch.split(x_dbl, [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        dt = self._dt_without_bias(dt).transpose(1, 2)  # (b, d, l)
        delta_bias, delta_softplus = self.dt_proj.bias.float(), True  # applied inside the scan
        if mask is not None:  # Δ = softplus(dt + bias) on tokens, 0 on padding
            dt = (F.softplus(dt.float() + delta_bias[None, :, None]) * mask[:, None, :]).to(dt.dtype)  # (b, d, l)
            delta_bias, delta_softplus = None, False

        # 3. Selective scan, continuing from the cached SSM state.
        if ssm_state is not None and torch.is_grad_enabled():
            # The cache overwrites this very tensor in place below (update_recurrent_state copies into it),
            # but the scan saves its initial state for the backward: without a copy, backpropagating through
            # a cache continuation failed with "modified by an inplace operation".
            ssm_state = ssm_state.clone()
        y, new_ssm_state = selective_scan_fn(
            x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D=self.D.float(), z=z,
            delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=ssm_state, return_last_state=True,
        )  # (b, d, l), (b, d, n)
        if cache is not None:
            cache.update_conv_state(new_conv_state.contiguous(), self.layer_idx,
                                    conv_kernel_size=self.conv_kernel_size - 1)
            cache.update_recurrent_state(new_ssm_state.to(torch.float32).contiguous(), self.layer_idx)
        return self.out_proj(y.transpose(1, 2))  # (b, l, d_model)

    def _dt_without_bias(self, dt: torch.Tensor) -> torch.Tensor:  # (b, l, r) -> (b, l, d)
        """Δ's projection; its bias is applied inside the scan, in float32, as mamba-ssm does."""
        if type(self.dt_proj) is nn.Linear:
            return dt @ self.dt_proj.weight.T
        # PEFT (LoRA) wrapped dt_proj: only its forward applies the adapter (and a PiSSA-style init changes the
        # base weight it wraps), so project through it and take the bias back out
        return self.dt_proj(dt) - self.dt_proj.bias

    #: Up to this many tokens fed on a cache at once (in inference, on the CPU), a loop of one-token steps beats
    #: the chunked conv + scan, whose fixed cost dominates short chunks. The tool loop feeds such chunks all the
    #: time: a command token with its one-token observation (a digit a pointer read). `toolssm bench decode`
    #: measures it (`short_chunk` in eval/results/bench.json: with 4 tokens the loop is 1.80x faster at batch 1,
    #: 1.44x at batch 16).
    STEP_LOOP_MAX_LENGTH = 4

    def _steps_are_faster(self, length: int, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> bool:
        """Whether a loop of one-token steps should feed this chunk (``mask``: the chunk's own, (b, l), or None)."""
        if length == 1:
            return True
        if length > self.STEP_LOOP_MAX_LENGTH or hidden_states.is_cuda or torch.is_grad_enabled():
            # On CUDA the fused scan wins at any length; under autograd the step is the unfused one (the fused C++
            # step has no backward), and a loop of those is slower than the chunked conv + scan.
            return False
        # The step loop masks whole rows only (a row the fast tool loop holds while its tool runs): a row with
        # both tokens and padding takes the chunked path.
        if mask is None:
            return True
        first = mask[:, :1]  # (b, 1)
        return bool((mask == first).all())

    def _step(self, x, z, conv_state, ssm_state, conv_weight, A) -> torch.Tensor:
        """One token, updating the cached states in place. x, z: (b, d) -> (b, d_model).

        Conv, x_proj, dt_proj, the state update and the gate in one call (``ops.mamba_step``: fused C++ on the
        CPU without autograd, else the composition of the one-token ops)."""
        args = (
            x, z, conv_state, conv_weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.dt_proj.bias, A, self.D, ssm_state,
        )
        if type(self.x_proj) is nn.Linear and type(self.dt_proj) is nn.Linear:
            y = mamba_step(*args, activation=self.activation)  # (b, d)
        else:  # PEFT (LoRA) wrapped projections: only their forward applies the adapter, so project through them
            y = mamba_step_ref(*args, activation=self.activation, x_proj=self.x_proj, dt_proj=self.dt_proj)
        return self.out_proj(y)


class ToolMambaRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.promote_types(input_dtype, torch.float32))  # float64 stays float64
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)  # (..., d_model)


class ToolMambaBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: h = h + mixer(norm(h))."""

    def __init__(self, config: ToolMambaConfig, layer_idx: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = ToolMambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = ToolMambaMixer(config, layer_idx=layer_idx)

    def forward(self, hidden_states, cache: Cache | None = None, attention_mask: torch.Tensor | None = None):
        residual = hidden_states.to(torch.promote_types(hidden_states.dtype, torch.float32)) if self.residual_in_fp32 \
            else hidden_states
        hidden_states = self.mixer(self.norm(hidden_states.to(self.norm.weight.dtype)), cache=cache,
                                   attention_mask=attention_mask)
        return residual + hidden_states  # (b, l, d_model)


class ToolMambaPreTrainedModel(PreTrainedModel):
    config_class = ToolMambaConfig
    config: ToolMambaConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["ToolMambaBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True
    # attention_mask 0 leaves the cached state as it was: the fast tool loop feeds right-padded chunks
    _padding_keeps_state = True

    @torch.no_grad()
    def _init_weights(self, module):
        """transformers' default init for Linear/Embedding/norms, then Mamba's own for the mixer."""
        super()._init_weights(module)
        if isinstance(module, ToolMambaMixer):
            module.reset_ssm_parameters()
            init.kaiming_uniform_(module.conv1d.weight, a=math.sqrt(5))
            if module.conv1d.bias is not None:
                init.zeros_(module.conv1d.bias)
            init.kaiming_uniform_(module.out_proj.weight, a=math.sqrt(5))
            if self.config.rescale_prenorm_residual:
                init.copy_(module.out_proj.weight, module.out_proj.weight / math.sqrt(self.config.num_hidden_layers))
        elif isinstance(module, ToolMambaRMSNorm):
            init.ones_(module.weight)


@dataclass
class ToolMambaOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ToolMambaCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ToolMambaModel(ToolMambaPreTrainedModel):
    def __init__(self, config: ToolMambaConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([ToolMambaBlock(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.norm_f = ToolMambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        # mamba-ssm names the embedding `embedding`; accept its state dicts as they are.
        self._register_load_state_dict_pre_hook(self._rename_mamba_ssm_keys)
        self.post_init()

    @staticmethod
    def _rename_mamba_ssm_keys(state_dict, prefix, *args):
        for key in list(state_dict):
            if key.startswith(prefix + "embedding."):
                state_dict[key.replace(prefix + "embedding.", prefix + "embeddings.", 1)] = state_dict.pop(key)

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (b, l)
        inputs_embeds: torch.Tensor | None = None,  # (b, l, d_model)
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        attention_mask: torch.Tensor | None = None,  # (b, l)
        cache_params: Cache | None = None,  # the pre-5.24 name of `cache`
        past_key_values: Cache | None = None,  # transformers' usual name
        **kwargs,
    ) -> ToolMambaOutput | tuple:
        cache = resolve_cache(cache, cache_params, past_key_values, self.config)
        use_cache = uses_cache(use_cache, cache, self.config, self.training and self.gradient_checkpointing,
                               self.training)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("ToolMambaModel.forward: pass exactly one of `input_ids` or `inputs_embeds`")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)  # (b, l, d_model)
        if inputs_embeds.shape[1] == 0:
            raise ValueError("ToolMambaModel.forward: the input has no tokens (length 0)")
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)  # from here on, a cache exactly when use_cache
        _check_padding(attention_mask, inputs_embeds.shape[1],
                       on_cache=cache is not None and cache.get_conv_state(0) is not None)

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        for block in self.layers:
            hidden_states = block(hidden_states, cache=cache, attention_mask=attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm_f(hidden_states.to(self.norm_f.weight.dtype))  # (b, l, d_model)
        if output_hidden_states:  # as transformers' Mamba: every block's output, then the normed last state
            all_hidden_states += (hidden_states,)

        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden_states) if v is not None)
        return ToolMambaOutput(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden_states)


class ToolMambaForCausalLM(ToolMambaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: ToolMambaConfig):
        super().__init__(config)
        self.backbone = ToolMambaModel(config)
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
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,  # (b, l), -100 = no loss
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache_params: Cache | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> ToolMambaCausalLMOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids, inputs_embeds=inputs_embeds, cache=cache, cache_params=cache_params,
            past_key_values=past_key_values, use_cache=use_cache, output_hidden_states=output_hidden_states,
            return_dict=True, attention_mask=attention_mask,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]  # (b, logits_to_keep, d_model)
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]  # (b, len(logits_to_keep), d_model)
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype))  # (b, l, vocab)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up, float64 kept

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if not return_dict:
            output = (logits, *(v for v in (outputs.cache, outputs.hidden_states) if v is not None))
            return (loss, *output) if loss is not None else output
        return ToolMambaCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )


__all__ = ["ToolMambaBlock", "ToolMambaForCausalLM", "ToolMambaMixer", "ToolMambaModel", "ToolMambaPreTrainedModel"]
