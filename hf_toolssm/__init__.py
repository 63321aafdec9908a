"""hf_toolssm: tool-using state-space models for Hugging Face Transformers.

``import hf_toolssm`` registers our models with transformers' Auto classes, so that ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM`` load them like any other model.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .models.tool_mamba import ToolMambaConfig, ToolMambaForCausalLM, ToolMambaModel
from .models.tool_rnn import ToolRNNConfig, ToolRNNForCausalLM, ToolRNNModel

__version__ = "0.1.0"


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
