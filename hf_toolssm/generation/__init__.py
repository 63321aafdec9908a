"""Tool-augmented generation: the ``generate()`` hook and the fast tool loop, for any model with a cache (the
loop is fastest for recurrent ones)."""

from .logits_processor import ToolCallingLogitsProcessor, generate_with_logits_processor
from .result import ToolGenerationResult
from .tool_loop import generate_with_tools

__all__ = [
    "ToolCallingLogitsProcessor",
    "ToolGenerationResult",
    "generate_with_logits_processor",
    "generate_with_tools",
]
