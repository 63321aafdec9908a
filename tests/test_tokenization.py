"""The character tokenizer: vocabulary, single-token protocol tokens, lossless decode, save/load, and
adding the protocol tokens to another tokenizer. Nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hf_toolssm.tokenization import (
    CHARACTERS,
    UNK,
    add_tool_tokens,
    build_char_tokenizer,
    char_vocabulary,
    protocol_ids,
)
from hf_toolssm.tools import EOS, PAD, Calculator, PointerMemory, SearchMemory, ToolEnvironment, protocol_tokens

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_vocabulary_layout(tokenizer):
    vocabulary = char_vocabulary()
    every_tool = ToolEnvironment(tools=[PointerMemory(8), SearchMemory(), Calculator()]).special_tokens()
    assert vocabulary[: len(every_tool)] == every_tool
    assert vocabulary[len(every_tool)] == "[code]"
    assert vocabulary[len(every_tool) + 1 :] == ["\n", *(chr(c) for c in range(32, 127)), UNK]
    assert len(tokenizer) == len(vocabulary) == len(set(vocabulary))
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == (PAD, 0)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == (EOS, 1)
    assert tokenizer.bos_token is None and tokenizer.unk_token == UNK


def test_convert_tokens_to_ids_is_right_for_every_token(tokenizer):
    vocabulary = char_vocabulary()
    assert tokenizer.convert_tokens_to_ids(vocabulary) == list(range(len(vocabulary)))
    assert tokenizer.convert_ids_to_tokens(list(range(len(vocabulary)))) == vocabulary
    assert tokenizer.convert_tokens_to_ids(["é", "[nope]"]) == [tokenizer.unk_token_id] * 2


def test_text_tokenizes_into_characters_and_protocol_tokens(tokenizer):
    text = "12+34=[pointer1.read()]5\n"
    assert tokenizer.tokenize(text) == [*"12+34=", "[pointer1.read()]", "5", "\n"]
    ids = tokenizer(text)["input_ids"]  # no BOS/EOS added behind the caller's back
    assert ids == tokenizer.convert_tokens_to_ids([*"12+34=", "[pointer1.read()]", "5", "\n"])
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12+34=5\n"
    # a space next to a special token is kept, and "[" that starts no token is a character
    assert tokenizer.tokenize(" [ANS] [x") == [" ", "[ANS]", " ", "[", "x"]


def test_every_protocol_token_is_one_token(tokenizer):
    for token in protocol_tokens():
        assert tokenizer.tokenize(f"a{token}b") == ["a", token, "b"]


@FAST
@given(
    pieces=st.lists(
        st.one_of(st.sampled_from(protocol_tokens()), st.text(alphabet="".join(CHARACTERS), max_size=8)),
        max_size=20,
    )
)
def test_decode_inverts_encode(tokenizer, pieces):
    text = "".join(pieces)
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) == len(tokenizer.tokenize(text))


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    vocabulary = char_vocabulary()
    text = "7+5=[pointer2.move_right()][find]v1[/cmd][OBS]v1=1[/OBS]21[ANS]12[EOS]\n ~"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.convert_tokens_to_ids(vocabulary) == list(range(len(vocabulary)))
    assert loaded.decode(tokenizer(text)["input_ids"]) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token) == (0, 1, UNK)
    assert set(loaded.all_special_tokens) == set(tokenizer.all_special_tokens)


def test_padding_uses_pad(tokenizer):
    batch = tokenizer(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][2:] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [1, 1, 0, 0]


def small_pretrained_tokenizer() -> PreTrainedTokenizerFast:
    """A stand-in for a pretrained word-level tokenizer, built locally: no Hub access here."""
    vocabulary = {"<unk>": 0, "<|endoftext|>": 1, "hello": 2, "world": 3, "1": 4, "+": 5}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|endoftext|>")


class RecordingModel:
    def __init__(self):
        self.resized_to = None

    def resize_token_embeddings(self, size):
        self.resized_to = size


def test_add_tool_tokens_to_a_pretrained_tokenizer():
    tokenizer, model = small_pretrained_tokenizer(), RecordingModel()
    added = add_tool_tokens(tokenizer, model)
    # every protocol token but [EOS] (the tokenizer keeps its own), and [PAD] because it had none
    assert added == len(protocol_tokens()) - 1
    assert len(tokenizer) == 6 + added and model.resized_to == len(tokenizer)
    assert tokenizer.pad_token == PAD and tokenizer.eos_token == "<|endoftext|>"
    for token in protocol_tokens():
        if token != EOS:
            assert tokenizer.tokenize(f"hello{token}world") == ["hello", token, "world"]
            assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    ids = tokenizer("hello [find]world[/cmd]")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["hello", "[find]", "world", "[/cmd]"]
    assert add_tool_tokens(tokenizer) == 0  # idempotent


def test_protocol_eos_is_the_pretrained_tokenizers_own_end_of_sequence():
    """add_tool_tokens adds no [EOS] to a tokenizer that has an eos token, so traces must end with that token."""
    tokenizer = small_pretrained_tokenizer()
    add_tool_tokens(tokenizer)
    find = tokenizer.convert_tokens_to_ids("[find]")
    assert protocol_ids(tokenizer, ["hello", "[find]", EOS]) == [2, find, 1]
    assert protocol_ids(build_char_tokenizer(), ["1", EOS]) == [build_char_tokenizer().convert_tokens_to_ids("1"), 1]


def character_pretrained_tokenizer() -> PreTrainedTokenizerFast:
    """A pretrained-style tokenizer with its own "</s>" and every character, after add_tool_tokens."""
    vocabulary = ["<pad>", "</s>", "<unk>", *CHARACTERS]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    add_tool_tokens(tokenizer)
    return tokenizer


def test_a_pretrained_tokenizer_encodes_training_traces():
    from hf_toolssm.data import encode_instance
    from hf_toolssm.tasks import get_task

    tokenizer = character_pretrained_tokenizer()
    example = encode_instance(get_task("addition").instance("12", "34"), tokenizer)
    assert example["input_ids"][-1] == example["labels"][-1] == tokenizer.convert_tokens_to_ids("</s>")


def test_a_tokenizer_whose_eos_is_also_its_unk_encodes_training_traces():
    """GPT-2's convention: one "<|endoftext|>" is both; the trace's [EOS] becomes it and is not unknown."""
    from hf_toolssm.data import encode_instance
    from hf_toolssm.tasks import get_task

    vocabulary = ["<pad>", "<|endoftext|>", *CHARACTERS]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocabulary)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    add_tool_tokens(tokenizer)
    example = encode_instance(get_task("addition").instance("12", "34"), tokenizer)
    assert example["input_ids"][-1] == example["labels"][-1] == tokenizer.eos_token_id


def test_a_mistake_names_a_predicted_pretrained_eos_as_the_protocols():
    """Teacher-forced mistakes are read beside the trace, whose end is [EOS], whatever the tokenizer calls it."""
    from types import SimpleNamespace

    from hf_toolssm.evaluation import teacher_forced_mistakes
    from hf_toolssm.tasks import get_task

    tokenizer = character_pretrained_tokenizer()

    class EndsAtOnce:  # predicts the end of the sequence after every token
        device = torch.device("cpu")

        def __call__(self, input_ids):
            logits = torch.zeros(*input_ids.shape, len(tokenizer))  # (1, l, vocab)
            logits[..., tokenizer.eos_token_id] = 1.0
            return SimpleNamespace(logits=logits)

    mistakes, scored = teacher_forced_mistakes(EndsAtOnce(), tokenizer, get_task("addition").instance("1", "2"))
    assert len(mistakes) == scored - 1  # right only at the end
    assert {m.predicted for m in mistakes} == {EOS}


def test_add_tool_tokens_to_our_own_tokenizer_adds_nothing():
    tokenizer = build_char_tokenizer()
    assert add_tool_tokens(tokenizer) == 0
    assert len(tokenizer) == len(char_vocabulary())
