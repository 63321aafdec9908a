"""ToolRNNConfig: the paper's LSTM / GRU baselines as a language model that uses tools.

A stack of single-layer ``nn.LSTM`` / ``nn.GRU`` cells between an embedding and an LM head. The recurrent
state is fixed-size, like Mamba's, so the same tools, traces and fast tool loop apply; ``tool_config`` is
the same as ``ToolMambaConfig.tool_config`` (what the checkpoint was trained for).
"""

# No `from __future__ import annotations` here: @strict checks each field against its annotation and silently
# skips annotations that are strings, so `use_cache="no"` (truthy: the model cached) got past the checks.
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

#: The recurrent cells a ToolRNN can be built from.
CELL_TYPES = ("lstm", "gru")


@strict
class ToolRNNConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: size of the vocabulary (the character tokenizer with tool tokens has 133).
        hidden_size: width of every recurrent layer's hidden state.
        num_hidden_layers: number of stacked recurrent layers.
        cell_type: ``"lstm"`` or ``"gru"``.
        embedding_size: width of the token embedding; ``None`` = ``hidden_size``.
        dropout: dropout on the output of every layer but the last (what ``nn.LSTM(dropout=...)`` does).
        tie_word_embeddings: share the embedding with the LM head; needs ``embedding_size == hidden_size``.
        tool_config: what the checkpoint was trained for, e.g. ``{"task": "addition", "task_kwargs": {}}``;
            read by the CLI and evaluation.

    Example:

    ```python
    >>> import hf_toolssm  # registers the Auto classes
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("tool_rnn", cell_type="gru", hidden_size=64, vocab_size=133)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "tool_rnn"

    vocab_size: int = 133
    hidden_size: int = 512
    num_hidden_layers: int = 2
    cell_type: str = "lstm"
    embedding_size: int | None = None
    dropout: float = 0.0
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 1
    use_cache: bool = True
    tool_config: dict | None = None

    def __post_init__(self, **kwargs):
        self.embedding_size = self.hidden_size if self.embedding_size is None else self.embedding_size
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject configs that would build a broken model, saying how to fix them."""
        if self.cell_type not in CELL_TYPES:
            raise ValueError(f"ToolRNNConfig.cell_type must be one of {CELL_TYPES}, got {self.cell_type!r}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "embedding_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ToolRNNConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ToolRNNConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.tie_word_embeddings and self.embedding_size != self.hidden_size:
            raise ValueError(
                "ToolRNNConfig.tie_word_embeddings needs embedding_size == hidden_size (the LM head reads the last "
                f"hidden state), got embedding_size={self.embedding_size}, hidden_size={self.hidden_size}"
            )

    @property
    def layer_types(self) -> list[str]:
        """Every layer keeps a fixed-size recurrent state: transformers' cache gives each a linear-attention slot."""
        return ["linear_attention"] * self.num_hidden_layers


__all__ = ["CELL_TYPES", "ToolRNNConfig"]
