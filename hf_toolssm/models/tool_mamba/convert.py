"""Convert Mamba-1 checkpoints to ToolMamba: transformers' ``MambaForCausalLM`` and mamba-ssm's ``MambaLMHeadModel``.

The parameter names and the math are the same (see modeling_tool_mamba.py), so conversion is a config
translation plus, for mamba-ssm, two small fixes of the state dict:

- mamba-ssm names the embedding ``backbone.embedding``; we (and transformers) say ``backbone.embeddings``;
- mamba-ssm pads the vocabulary to a multiple of ``pad_vocab_size_multiple`` (8 for the released
  checkpoints): the extra rows of the embedding and the LM head belong to no token and are dropped.

    >>> from hf_toolssm.models.tool_mamba.convert import from_transformers_mamba
    >>> tool_model = from_transformers_mamba(MambaForCausalLM.from_pretrained("state-spaces/mamba-130m-hf"))
"""

from __future__ import annotations

import re

import torch

from .configuration_tool_mamba import ToolMambaConfig
from .modeling_tool_mamba import ToolMambaForCausalLM

# The fields ToolMambaConfig shares with transformers' MambaConfig (everything but `tool_config`).
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon", "pad_token_id",
    "bos_token_id", "eos_token_id", "expand", "conv_kernel", "use_bias", "use_conv_bias", "hidden_act",
    "initializer_range", "residual_in_fp32", "time_step_rank", "time_step_scale", "time_step_min",
    "time_step_max", "time_step_init_scheme", "time_step_floor", "rescale_prenorm_residual", "use_cache",
    "tie_word_embeddings",
)


def config_from_mamba_config(mamba_config, **overrides) -> ToolMambaConfig:
    """A ToolMambaConfig with the architecture of a transformers ``MambaConfig``; ``overrides`` win
    (e.g. ``tool_config=...``). MambaConfig's CPU-fallback switches (``use_mambapy``,
    ``use_associative_scan``) have no counterpart: our ops choose their path per call."""
    fields = {name: getattr(mamba_config, name) for name in _SHARED_FIELDS if hasattr(mamba_config, name)}
    fields.update(overrides)
    return ToolMambaConfig(**fields)


def from_transformers_mamba(model, **config_overrides) -> ToolMambaForCausalLM:
    """Convert a transformers ``MambaForCausalLM`` (same state-dict names) to ``ToolMambaForCausalLM``,
    keeping its device and dtype. The result is in eval mode."""
    config = config_from_mamba_config(model.config, **config_overrides)
    parameter = next(model.parameters())
    tool_model = ToolMambaForCausalLM(config).to(device=parameter.device, dtype=parameter.dtype)
    tool_model.load_state_dict(model.state_dict(), strict=True)
    return tool_model.eval()


def from_mamba_ssm_state_dict(
    state_dict: dict[str, torch.Tensor],
    d_model: int,
    n_layer: int,
    vocab_size: int,
    *,
    residual_in_fp32: bool = True,
    norm_epsilon: float = 1e-5,
    tie_embeddings: bool = True,
    **config_kwargs,
) -> ToolMambaForCausalLM:
    """Build a ``ToolMambaForCausalLM`` from a mamba-ssm ``MambaLMHeadModel`` state dict.

    ``d_model``, ``n_layer`` and ``vocab_size`` are the fields of mamba-ssm's ``config.json`` (``vocab_size``
    is the tokenizer's, before padding). The mixer sizes (d_state, d_conv, expand, dt_rank) and the use of
    biases are read from the tensor shapes; ``config_kwargs`` go to ToolMambaConfig (``pad_token_id``,
    ``tool_config``, ...). Only Mamba-1 mixers with RMSNorm (``rms_norm=True``, as every released checkpoint)
    are supported; anything else fails loudly on the state-dict keys.
    """
    state_dict = {_mamba_ssm_key(key): value for key, value in state_dict.items()}
    if "backbone.layers.0.norm.bias" in state_dict:
        raise ValueError("from_mamba_ssm_state_dict: LayerNorm checkpoints (rms_norm=False) are not supported")
    if "backbone.layers.0.mixer.A_log" not in state_dict:
        raise ValueError("from_mamba_ssm_state_dict: no Mamba-1 mixer found at `backbone.layers.0.mixer` "
                         "(Mamba-2 checkpoints are not supported)")
    found_layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"backbone\.layers\.(\d+)\.", key))}
    if found_layers != set(range(n_layer)):
        raise ValueError(f"from_mamba_ssm_state_dict: n_layer={n_layer}, but the state dict has layers "
                         f"{sorted(found_layers)}")

    mixer = "backbone.layers.0.mixer."
    d_inner, d_state = state_dict[mixer + "A_log"].shape
    if d_inner % d_model:
        raise ValueError(f"from_mamba_ssm_state_dict: d_inner={d_inner} is not a multiple of d_model={d_model}")
    config = ToolMambaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        state_size=d_state,
        expand=d_inner // d_model,
        conv_kernel=state_dict[mixer + "conv1d.weight"].shape[-1],
        time_step_rank=state_dict[mixer + "dt_proj.weight"].shape[1],
        use_bias=mixer + "in_proj.bias" in state_dict,
        use_conv_bias=mixer + "conv1d.bias" in state_dict,
        residual_in_fp32=residual_in_fp32,
        layer_norm_epsilon=norm_epsilon,
        tie_word_embeddings=tie_embeddings,
        **config_kwargs,
    )

    embedding = state_dict["backbone.embeddings.weight"]
    if embedding.shape[0] < vocab_size:
        raise ValueError(f"from_mamba_ssm_state_dict: vocab_size={vocab_size} is larger than the embedding "
                         f"({embedding.shape[0]} rows)")
    # Drop the padding rows (they belong to no token).
    state_dict["backbone.embeddings.weight"] = embedding[:vocab_size]
    if "lm_head.weight" in state_dict:
        state_dict["lm_head.weight"] = state_dict["lm_head.weight"][:vocab_size]
    if tie_embeddings:
        state_dict.pop("lm_head.weight", None)  # tied to the embedding

    model = ToolMambaForCausalLM(config).to(embedding.dtype)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [key for key in missing if not (tie_embeddings and key == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"from_mamba_ssm_state_dict: state dict does not match: missing {missing}, "
                         f"unexpected {unexpected}")
    # With tie_word_embeddings the LM head *is* the embedding parameter (tied at construction), so it
    # already holds the loaded weights.
    return model.eval()


def _mamba_ssm_key(key: str) -> str:
    return re.sub(r"^backbone\.embedding\.", "backbone.embeddings.", key)


__all__ = ["config_from_mamba_config", "from_mamba_ssm_state_dict", "from_transformers_mamba"]
