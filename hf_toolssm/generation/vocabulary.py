"""Token ids <-> the protocol's token strings, for one tokenizer, as the decode loops need them.

The tool environment works on token strings and knows the end of a sequence as ``[EOS]``. A pretrained
tokenizer keeps its own end-of-sequence token (``add_tool_tokens`` adds ``[EOS]`` only to a tokenizer that
has none), so that token must read as ``[EOS]``: otherwise the environment would store it in memory as a
thought and never see the sequence end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ..tools.base import EOS


class ProtocolVocabulary:
    """One tokenizer's ids as protocol token strings, and the way back."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        #: the token string of every id, the tokenizer's own end-of-sequence token read as ``[EOS]``
        self.id_to_token: list[str] = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        if tokenizer.eos_token_id is not None:
            self.id_to_token[tokenizer.eos_token_id] = EOS
        self.token_to_id = {token: i for i, token in enumerate(self.id_to_token)}
        self.unk_token_id = tokenizer.unk_token_id
        self.tokenizer = tokenizer

    def prompt_ids(self, prompt: str | Sequence[str]) -> list[int]:
        """A prompt's ids: text is tokenized, a list of token strings is taken as it is. Both decode paths
        read prompts through here, so they see the same tokens."""
        tokens = self.tokenizer.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise ValueError("empty prompt: every row needs at least one token")
        unknown = sorted({token for token in tokens if token not in self.token_to_id})
        if unknown:
            raise ValueError(f"prompt tokens {unknown[:5]} are not in the tokenizer's vocabulary")
        ids = [self.token_to_id[token] for token in tokens]
        pad = self.tokenizer.pad_token_id
        if pad is not None and pad in ids:  # the decode paths pad prompts themselves: a pad inside one is lost
            raise ValueError(f"a prompt holds the padding token {self.tokenizer.pad_token}: the decode pads prompts "
                             "itself, and the generate() route cannot tell a pad of the prompt from its own")
        return ids

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """The ids of ``tokens``; a string the vocabulary lacks (a character in a tool's output that a
        pretrained tokenizer only has inside longer tokens, say) is the unknown token, as the tokenizer
        itself would have it."""
        ids = [self.token_to_id.get(token, self.unk_token_id) for token in tokens]
        if None in ids:
            missing = sorted({token for token, i in zip(tokens, ids, strict=True) if i is None})
            raise ValueError(f"tokens {missing[:5]} are not in the tokenizer's vocabulary, and it has no unknown "
                             "token to stand for them: add them (hf_toolssm.tokenization.add_tool_tokens adds the "
                             "protocol's) or give the tokenizer an unk_token")
        return ids

    def only_tokenizer_ids(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (..., vocab) with the ids past the tokenizer made impossible, in place: embedding
        matrices are often padded past ``len(tokenizer)`` (to a multiple of 8, as in mamba-130m), and those
        rows have no token string for a tool to read."""
        if scores.shape[-1] > len(self.id_to_token):
            scores[..., len(self.id_to_token) :] = torch.finfo(scores.dtype).min
        return scores


def check_prompts(prompts) -> None:
    """A TypeError for one prompt given where a list of prompts is expected: a string would decode each of its
    characters as a prompt of its own."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts is a list of prompts; for one, pass [{prompts[:20]!r}]")
