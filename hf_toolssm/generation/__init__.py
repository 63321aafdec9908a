"""Tool-augmented generation: the ``generate()`` hook for any model and the fast loop for recurrent ones."""

from .logits_processor import ToolCallingLogitsProcessor, generate_with_logits_processor
from .result import ToolGenerationResult
from .tool_loop import generate_with_tools

__all__ = [
    "ToolCallingLogitsProcessor",
    "ToolGenerationResult",
    "generate_with_logits_processor",
    "generate_with_tools",
]
