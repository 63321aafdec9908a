"""What a checkpoint folder must hold, checked before transformers loads it.

A damaged folder (a config.json that is not JSON, that names no model type, whose sizes do not fit the weights;
no weights at all) makes ``from_pretrained`` fail deep inside transformers, or worse, load with freshly initialised
weights of the wrong size. :func:`check_checkpoint` says instead which file is wrong and how; the CLI and the
model-card writer call it first.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME as WEIGHTS_INDEX_NAME  # shards listed in an index
from transformers.utils import SAFE_WEIGHTS_NAME as WEIGHTS_NAME  # what save_pretrained writes: model.safetensors


def read_config(folder: str | Path) -> dict:
    """The folder's config.json as a dict, or a ValueError that says what is wrong with it."""
    path = Path(folder) / "config.json"
    if not path.is_file() and (Path(folder) / "adapter_config.json").is_file():
        raise ValueError(f"{str(folder)!r} holds a PEFT adapter, not a whole model: merge it into its base and save "
                         "that (PeftModel.from_pretrained(base, FOLDER).merge_and_unload().save_pretrained(OUT); "
                         "training/lora_example.py says what to set in its config)")
    if not path.is_file():
        raise ValueError(f"{str(folder)!r} is not a checkpoint folder (no config.json); "
                         "pass a folder written by save_pretrained, e.g. model_cards/toolmamba-addition")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-save the checkpoint with save_pretrained") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ValueError(f"{path} names no model_type (e.g. \"tool_mamba\", \"gpt_neox\"): it says which "
                         "architecture the weights belong to; re-save the checkpoint with save_pretrained")
    return config


def weight_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Every tensor's shape in the folder's safetensors weights (one file or shards); None when it has none."""
    from safetensors import safe_open

    folder = Path(folder)
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        files = sorted(set(json.loads((folder / WEIGHTS_INDEX_NAME).read_text())["weight_map"].values()))
    elif (folder / WEIGHTS_NAME).is_file():
        files = [WEIGHTS_NAME]
    else:
        return None
    shapes = {}
    for name in files:
        with safe_open(folder / name, framework="pt") as weights:
            shapes.update({key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()})  # noqa: SIM118
    return shapes


def check_checkpoint(folder: str | Path) -> int:
    """Check that ``folder`` holds a config and weights that fit each other; return the number of parameters.

    The weights are read as shapes only (nothing is loaded) and compared with a model built from config.json on
    the meta device: a config that lost a size field (transformers fills in its default) builds a model of another
    size. Raises ValueError with what is wrong and how to fix it."""
    from transformers import AutoConfig, AutoModelForCausalLM  # our model types: registered by hf_toolssm's import
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = read_config(folder)["model_type"]
    if model_type not in CONFIG_MAPPING:  # before from_pretrained, which asks to run a folder's code (auto_map)
        known = sorted(CONFIG_MAPPING.keys())
        close = difflib.get_close_matches(str(model_type), known, n=1)
        raise ValueError(f"{folder}/config.json names model_type {model_type!r}, which transformers does not know"
                         + (f"; did you mean {close[0]!r}?" if close else " (ours: 'tool_mamba', 'tool_rnn')"))
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        with torch.device("meta"):  # shapes only: nothing allocated
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{folder}/config.json does not describe a model transformers can build: "
                         f"{str(error).splitlines()[0]}") from None
    expected = model.num_parameters()
    try:
        shapes = weight_shapes(folder)
    except Exception as error:  # safetensors' own error type (SafetensorError) for a truncated or empty file
        raise ValueError(f"{folder}: the weights cannot be read ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'damaged file'}); save the model again "
                         "with save_pretrained, or copy the checkpoint again") from None
    if shapes is None:
        if any(Path(folder).glob("*.bin")):  # the old pickle format: transformers checks it when loading
            return expected
        raise ValueError(f"{folder} holds no weights ({WEIGHTS_NAME}); save the model there with save_pretrained")
    found = sum(torch.Size(shape).numel() for shape in shapes.values())
    if found == expected:
        return found
    built = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    wrong = [name for name, shape in shapes.items() if name in built and built[name] != shape]
    detail = (f"{wrong[0]} is {shapes[wrong[0]]} in the weights but {built[wrong[0]]} from config.json" if wrong
              else f"config.json describes {expected:,} parameters, the weights hold {found:,}")
    raise ValueError(f"{folder}: config.json does not fit the weights ({detail}); a size field (hidden_size, "
                     "intermediate_size, num_hidden_layers, vocab_size, ...) is missing or wrong there")


__all__ = ["WEIGHTS_INDEX_NAME", "WEIGHTS_NAME", "check_checkpoint", "read_config", "weight_shapes"]
