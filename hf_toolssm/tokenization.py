"""Character-level tokenizer with the tool protocol's tokens, and the helper that adds those tokens to
any pretrained tokenizer.

Models trained from scratch (paper §4.1) read digits and symbols one character at a time, and every
protocol token (``[ANS]``, ``[pointer1.read()]``, ``[find]``, ...) is a single token. The vocabulary
is fixed and covers every tool at its largest, so one tokenizer serves every task and a checkpoint
never has to be resized to add a tool::

    id 0  [PAD]          padding
    id 1  [EOS]          end of sequence
    2..   the other protocol tokens, in :func:`~hf_toolssm.tools.protocol_tokens` order
          (fixed tokens, 8 pointers x read/move_left/move_right, [find], [calc], reserved [code])
    then  "\\n", then the printable ASCII characters 32 (space) .. 126 (~)
    last  [UNK]          any other character (so nothing is silently dropped)

The data pipeline maps token strings to ids with :func:`protocol_ids` (``convert_tokens_to_ids``, with
``[EOS]`` read as a pretrained tokenizer's own end-of-sequence token); it is right for every character and
protocol token (``tests/test_tokenization.py`` checks all of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .tools.base import EOS, PAD
from .tools.registry import protocol_tokens

UNK = "[UNK]"

#: Every plain character of the vocabulary: newline, then printable ASCII in code-point order.
CHARACTERS = ("\n", *(chr(code) for code in range(32, 127)))


def char_vocabulary() -> list[str]:
    """The tokenizer's tokens in id order (see the module docstring)."""
    return [*protocol_tokens(), *CHARACTERS, UNK]


def _special(token: str) -> AddedToken:
    # normalized=False and no stripping: the token must match its exact spelling and leave the
    # characters around it (spaces included) alone.
    return AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)


def build_char_tokenizer(**kwargs: Any) -> PreTrainedTokenizerFast:
    """The character-level tokenizer. ``kwargs`` go to ``PreTrainedTokenizerFast`` (e.g. ``padding_side``).

    Text is split into single characters (``"\\n"`` included); protocol tokens are registered as special
    added tokens, which the backend matches before splitting, so ``"[ANS]"`` is one token. Decoding joins
    tokens with nothing in between (``Fuse`` decoder, no clean-up), so ``decode(encode(text)) == text``
    for any text over the vocabulary.
    """
    vocabulary = char_vocabulary()
    ids = {token: i for i, token in enumerate(vocabulary)}
    backend = Tokenizer(models.WordLevel(vocab=ids, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    backend.decoder = decoders.Fuse()
    specials = [token for token in vocabulary if token not in CHARACTERS]
    backend.add_special_tokens([_special(token) for token in specials])  # ids stay as in the vocabulary
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        bos_token=None,
        extra_special_tokens=[token for token in specials if token not in (PAD, EOS, UNK)],
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def protocol_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int | None]:
    """``tokenizer.convert_tokens_to_ids`` for a trace's token strings, with the protocol's ``[EOS]`` as the
    tokenizer's own end-of-sequence token (a pretrained tokenizer keeps its own: see :func:`add_tool_tokens`)."""
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if tokenizer.eos_token_id is None:
        return ids
    return [tokenizer.eos_token_id if token == EOS else token_id for token, token_id in zip(tokens, ids, strict=True)]


def add_tool_tokens(tokenizer: PreTrainedTokenizerBase, model: Any = None) -> int:
    """Add every protocol token to a pretrained tokenizer; return how many were new.

    The protocol tokens become extra special tokens (never split, never normalized). ``[PAD]`` and
    ``[EOS]`` are only used when the tokenizer has no pad or eos token of its own: a pretrained model
    keeps its own end-of-sequence token, and the generation layer must treat it as the protocol's EOS.
    If ``model`` is given, its embeddings are resized to ``len(tokenizer)``. Calling it twice adds nothing.
    """
    size_before = len(tokenizer)
    named = {}
    if tokenizer.pad_token is None:
        named["pad_token"] = _special(PAD)
    if tokenizer.eos_token is None:
        named["eos_token"] = _special(EOS)
    already_special = set(map(str, tokenizer.extra_special_tokens))
    extra = [_special(token) for token in protocol_tokens() if token not in (PAD, EOS, *already_special)]
    tokenizer.add_special_tokens({**named, "extra_special_tokens": extra}, replace_extra_special_tokens=False)
    if model is not None:
        model.resize_token_embeddings(len(tokenizer))
    return len(tokenizer) - size_before
