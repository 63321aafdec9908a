from .configuration_tool_mamba import ToolMambaConfig
from .modeling_tool_mamba import (
    ToolMambaBlock,
    ToolMambaForCausalLM,
    ToolMambaMixer,
    ToolMambaModel,
    ToolMambaPreTrainedModel,
)

__all__ = [
    "ToolMambaBlock",
    "ToolMambaConfig",
    "ToolMambaForCausalLM",
    "ToolMambaMixer",
    "ToolMambaModel",
    "ToolMambaPreTrainedModel",
]
