"""Hub-ready checkpoint folders: a model card with model-index metadata, and remote code for users who do
not install hf_toolssm (``trust_remote_code=True``).

Push a folder to the Hub with one command: ``hf upload USER/toolmamba-addition model_cards/toolmamba-addition .``
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

_PACKAGE = Path(__file__).resolve().parent

#: Files copied next to the weights so the checkpoint loads with trust_remote_code=True, and the
#: package-relative imports rewritten to the flat layout of a Hub repo.
_REMOTE_CODE = {
    "configuration_tool_mamba.py": _PACKAGE / "models/tool_mamba/configuration_tool_mamba.py",
    "modeling_tool_mamba.py": _PACKAGE / "models/tool_mamba/modeling_tool_mamba.py",
    "selective_scan.py": _PACKAGE / "ops/selective_scan.py",
    "causal_conv1d.py": _PACKAGE / "ops/causal_conv1d.py",
    "mamba_step.py": _PACKAGE / "ops/mamba_step.py",
    "kernels.py": _PACKAGE / "ops/kernels.py",
}
_IMPORT_REWRITES = [
    (r"from \.\.\.ops\.(\w+) import", r"from .\1 import"),
    (r"from \.kernels import", r"from .kernels import"),
]


def export_remote_code(checkpoint: str | Path) -> None:
    """Copy the ToolMamba code into ``checkpoint`` and point ``config.json``'s ``auto_map`` at it."""
    checkpoint = Path(checkpoint)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "tool_mamba":
        raise ValueError(f"{checkpoint}: remote code export supports tool_mamba checkpoints, not {config.get('model_type')!r}")
    for name, source in _REMOTE_CODE.items():
        text = source.read_text()
        for pattern, replacement in _IMPORT_REWRITES:
            text = re.sub(pattern, replacement, text)
        (checkpoint / name).write_text(text)
    csrc = checkpoint / "csrc"
    csrc.mkdir(exist_ok=True)
    shutil.copy(_PACKAGE / "ops/csrc/selective_scan.cpp", csrc / "selective_scan.cpp")
    config["auto_map"] = {
        "AutoConfig": "configuration_tool_mamba.ToolMambaConfig",
        "AutoModel": "modeling_tool_mamba.ToolMambaModel",
        "AutoModelForCausalLM": "modeling_tool_mamba.ToolMambaForCausalLM",
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def write_model_card(
    checkpoint: str | Path, *, eval_results: str | Path | None = None, reproduce: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``checkpoint/README.md``; returns its path."""
    checkpoint = Path(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    tool_config = config.get("tool_config") or {}
    task = tool_config.get("task", "unknown")
    results = json.loads(Path(eval_results).read_text()) if eval_results else None

    model_index = []
    if results:
        for row in results["results"]:
            for metric in ("answer_exact_match", "trace_exact_match"):
                model_index.append(EvalResult(
                    task_type="text-generation", task_name=f"{task} with tools (length generalization)",
                    dataset_type=f"hf_toolssm/{task}", dataset_name=f"{task}, size {row['size']}",
                    dataset_config=f"size-{row['size']}", dataset_split=f"test (seed {results.get('seed')})",
                    metric_type=metric, metric_name=f"{metric.replace('_', ' ')} @ size {row['size']}",
                    metric_value=round(row[metric], 4),
                ))
    data = ModelCardData(
        library_name="transformers", license="apache-2.0", tags=["hf_toolssm", "mamba", "tool-use", "length-generalization"],
        model_name=repo_id or checkpoint.name, eval_results=model_index or None, pipeline_tag="text-generation",
    )
    params = _count_parameters(checkpoint)
    table = ""
    if results:
        table = "| size | samples | answer exact | trace exact | token acc. |\n|---:|---:|---:|---:|---:|\n" + "\n".join(
            f"| {r['size']} | {r['samples']} | {r['answer_exact_match']:.3f} | {r['trace_exact_match']:.3f} | "
            f"{r['token_accuracy']:.4f} |" for r in results["results"]
        ) + f"\n\nMeasured with `{results.get('command', 'toolssm eval')}` on {results.get('machine', '?')}, {results.get('date', '?')}."
    training_text = (
        f"Reproduce with:\n\n```bash\n{reproduce}\n```" if reproduce else "See the training config saved next to the weights."
    )
    content = f"""---
{data.to_yaml()}
---

# {repo_id or checkpoint.name}

A {config.get('model_type')} model ({params:,} parameters: {config.get('num_hidden_layers')} layers, d_model
{config.get('hidden_size')}) trained from scratch with hf_toolssm on
**{task}** traces that call a tool, after Malach et al., *To Infinity and Beyond: Tool-Use Unlocks Length
Generalization in State Space Models* (ICLR 2026). With the tool in the loop it solves instances far larger
than any it was trained on.

## Use

```python
import hf_toolssm  # registers the model classes
from transformers import AutoModelForCausalLM, AutoTokenizer
from hf_toolssm.generation import generate_with_tools
from hf_toolssm.tasks import get_task

model = AutoModelForCausalLM.from_pretrained("{repo_id or checkpoint}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id or checkpoint}")
task = get_task("{task}")
(result,) = generate_with_tools(model, tokenizer, [task.prompt_from_text("123+4567")], task.make_environment)
print(result.answer)
```

or from the command line: `toolssm solve {checkpoint} "123+4567"`. Without hf_toolssm installed the weights
still load with `trust_remote_code=True` (the modeling code ships in this folder); the tool loop itself needs
hf_toolssm.

## Results (greedy decoding, tool in the loop)

{table or "Run `toolssm eval` and regenerate this card with `--eval-results`."}

## Training

{training_text}

Trained on operands/sizes up to {tool_config.get('train_max_size', '?')}; loss only on thoughts, commands and
outputs (prompt and tool observations masked). Protocol: `docs/protocol.md`; task format: `docs/tasks.md`.
"""
    path = checkpoint / "README.md"
    ModelCard(content).save(path)
    return path


def _count_parameters(checkpoint: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in checkpoint.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            for key in f.keys():
                total += _prod(f.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
