"""ToolMambaConfig: a Mamba-1 language model that uses tools.

The fields and their defaults are those of transformers' ``MambaConfig`` so that a ``MambaForCausalLM``
checkpoint converts 1:1; ``tool_config`` adds what a checkpoint needs to drive its tools (which task, which
tools, their limits), so that ``toolssm solve CHECKPOINT PROBLEM`` needs nothing else.
"""

# No `from __future__ import annotations` here: @strict checks each field against its annotation, and it
# silently skips annotations that are strings, so with postponed annotations `hidden_size="big"` got past the
# type checks (and crashed in __post_init__ with "invalid literal for int(): 'bigbig'").
import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class ToolMambaConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: size of the vocabulary (the character tokenizer with tool tokens has 133).
        hidden_size: d_model, the residual stream width.
        state_size: d_state (N), the SSM state size per channel.
        num_hidden_layers: number of Mamba blocks.
        expand: d_inner = expand * hidden_size.
        conv_kernel: width of the causal depthwise convolution.
        time_step_rank: rank of the Δ projection; "auto" = ceil(hidden_size / 16).
        residual_in_fp32: keep the residual stream in float32 (as mamba-ssm does).
        tool_config: what the checkpoint was trained for, e.g.
            ``{"task": "addition", "task_kwargs": {}}`` (the task by name and its arguments); the CLI and the
            evaluation build the task, and with it the tools, from it.

    Example:

    ```python
    >>> import hf_toolssm  # registers the Auto classes
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("tool_mamba", hidden_size=64, num_hidden_layers=2, vocab_size=133)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "tool_mamba"

    vocab_size: int = 50280
    hidden_size: int = 768
    state_size: int = 16
    num_hidden_layers: int = 32
    layer_norm_epsilon: float = 1e-5
    # The ids of hf_toolssm's character tokenizer ([PAD] = 0, [EOS] = 1); converted checkpoints keep theirs.
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 1
    expand: int = 2
    conv_kernel: int = 4
    use_bias: bool = False
    use_conv_bias: bool = True
    hidden_act: str = "silu"
    initializer_range: float = 0.1
    residual_in_fp32: bool = True
    time_step_rank: str | int = "auto"
    time_step_scale: float = 1.0
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_init_scheme: str = "random"
    time_step_floor: float = 1e-4
    rescale_prenorm_residual: bool = False
    use_cache: bool = True
    tie_word_embeddings: bool = True
    tool_config: dict | None = None

    def __post_init__(self, **kwargs):
        self.intermediate_size = int(self.expand * self.hidden_size)
        self.time_step_rank = math.ceil(self.hidden_size / 16) if self.time_step_rank == "auto" else self.time_step_rank
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject configs that would build a broken model, saying how to fix them."""
        for name in ("vocab_size", "hidden_size", "state_size", "num_hidden_layers", "expand", "conv_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ToolMambaConfig.{name} must be a positive integer, got {value!r}")
        if self.conv_kernel < 2:
            raise ValueError(
                f"ToolMambaConfig.conv_kernel must be >= 2 (a causal conv needs a past), got {self.conv_kernel}"
            )
        if self.hidden_act not in ("silu", "swish"):
            raise ValueError(f"ToolMambaConfig.hidden_act must be 'silu' (as in Mamba), got {self.hidden_act!r}")
        if not isinstance(self.time_step_rank, int) or self.time_step_rank < 1:
            raise ValueError(
                f"ToolMambaConfig.time_step_rank must be 'auto' or a positive integer, got {self.time_step_rank!r}"
            )
        if not 0 < self.time_step_min <= self.time_step_max:
            raise ValueError(f"ToolMambaConfig needs 0 < time_step_min <= time_step_max (the range Δ starts in), got "
                             f"{self.time_step_min} and {self.time_step_max}")
        if self.time_step_init_scheme not in ("random", "constant"):
            raise ValueError(f"ToolMambaConfig.time_step_init_scheme must be 'random' or 'constant', got "
                             f"{self.time_step_init_scheme!r}")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"ToolMambaConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}")

    @property
    def layer_types(self) -> list[str]:
        """Every layer keeps a fixed-size recurrent state: transformers' cache gives each a linear-attention slot."""
        return ["linear_attention"] * self.num_hidden_layers

    def to_dict(self) -> dict:
        output = super().to_dict()
        if self._auto_class is None:
            # Loaded through hf_toolssm, not a folder's own code: a save writes no code files, so a shipped card's
            # auto_map would point a trust_remote_code load at files the copy lacks (ship it with
            # hf_toolssm.model_card.export_remote_code). Under remote code transformers copies the files itself.
            output.pop("auto_map", None)
        return output


__all__ = ["ToolMambaConfig"]
