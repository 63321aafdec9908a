"""Token ids <-> the protocol's token strings, for one tokenizer.

The tool environment works on token strings and knows the end of a sequence as ``[EOS]``. A pretrained
tokenizer keeps its own end-of-sequence token (``add_tool_tokens`` adds ``[EOS]`` only to a tokenizer that
has none), so that token must read as ``[EOS]``: otherwise the environment would store it in memory as a
thought and never see the sequence end.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ..tools.base import EOS


def protocol_id_to_token(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The token string of every id, with the tokenizer's own end-of-sequence token read as ``[EOS]``."""
    id_to_token: list[str] = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if tokenizer.eos_token_id is not None:
        id_to_token[tokenizer.eos_token_id] = EOS
    return id_to_token


def protocol_token_to_id(id_to_token: list[str]) -> dict[str, int]:
    """The inverse map; ``[EOS]`` goes to the tokenizer's end-of-sequence id."""
    return {token: i for i, token in enumerate(id_to_token)}
