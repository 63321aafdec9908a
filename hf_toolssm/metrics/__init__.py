"""Our `evaluate` metric modules, loadable offline."""

from pathlib import Path

TOOL_TRACE_ACCURACY = Path(__file__).with_name("tool_trace_accuracy")


def load_tool_trace_accuracy():
    """``evaluate.load`` of the local tool_trace_accuracy module (no Hub access needed)."""
    import evaluate

    return evaluate.load(str(TOOL_TRACE_ACCURACY / "tool_trace_accuracy.py"))
