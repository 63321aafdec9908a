"""hf_toolssm: tool-using state-space models for Hugging Face Transformers.

``import hf_toolssm`` registers our models with transformers' Auto classes, so that ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM`` load them like any other model.
"""

from importlib.metadata import PackageNotFoundError, version

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .models.tool_mamba import ToolMambaConfig, ToolMambaForCausalLM, ToolMambaModel
from .models.tool_rnn import ToolRNNConfig, ToolRNNForCausalLM, ToolRNNModel

try:
    __version__ = version("hf-toolssm")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"


def _register(config_class, model_class, causal_lm_class) -> None:
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)


_register(ToolMambaConfig, ToolMambaModel, ToolMambaForCausalLM)
_register(ToolRNNConfig, ToolRNNModel, ToolRNNForCausalLM)

__all__ = [
    "ToolMambaConfig",
    "ToolMambaForCausalLM",
    "ToolMambaModel",
    "ToolRNNConfig",
    "ToolRNNForCausalLM",
    "ToolRNNModel",
]
