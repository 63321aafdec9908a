from .configuration_tool_rnn import CELL_TYPES, ToolRNNConfig
from .modeling_tool_rnn import ToolRNNForCausalLM, ToolRNNLayer, ToolRNNModel, ToolRNNPreTrainedModel

__all__ = [
    "CELL_TYPES",
    "ToolRNNConfig",
    "ToolRNNForCausalLM",
    "ToolRNNLayer",
    "ToolRNNModel",
    "ToolRNNPreTrainedModel",
]
