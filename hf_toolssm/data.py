"""Tasks to training data: tokenized instances with loss masks, as ``datasets`` datasets, and their collator.

Every example has ``input_ids`` (prompt + reference trace), ``attention_mask`` (all ones) and ``labels``:
the ids again, with -100 wherever the model must not be trained to predict the token, namely the prompt
and every tool observation (paper §3: "the input question and tool observations are masked from the
loss"). Labels are *not* shifted; the model shifts them, as every causal LM in transformers does. For
the ``addition_cot_no_tool`` ablation the would-be observations are thoughts, so only its prompt is
masked: masking follows each token's role, nothing is special-cased.

Randomness and splits. Instances come from ``random.Random`` streams named after ``(split, seed)``, and
after the size for a test set (so adding a size to a test grid leaves the others as they were): the same
arguments give the same data on every machine and run. Separate streams make a train/test collision
improbable, not impossible, and at small sizes it is likely (1-digit addition has 81 problems); pass the
test set as ``exclude=`` when building training data and no training example will have a test prompt.
That is the guarantee: *train never contains a prompt in ``exclude``*, tested in ``tests/test_tasks.py``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from .tasks.base import UNSCORED_ROLES, Instance, Task
from .tokenization import protocol_ids
from .tools.base import EOS

IGNORE_INDEX = -100
#: consecutive rejected samples after which ``exclude`` is taken to cover the whole training distribution
MAX_REJECTIONS = 10_000

Example = dict[str, Any]


def encode_instance(instance: Instance, tokenizer: PreTrainedTokenizerBase) -> Example:
    """One training example: ``input_ids``, ``attention_mask``, ``labels`` (prompt and observations -100),
    plus ``prompt`` (text), ``answer``, ``size`` and ``task`` for bookkeeping."""
    tokens = instance.full_tokens()
    input_ids = protocol_ids(tokenizer, tokens)
    # protocol_ids gave [EOS] the tokenizer's own end-of-sequence id, which may also be its unk id (GPT-2's
    # "<|endoftext|>" is both): that [EOS] is known
    own_eos = tokenizer.eos_token_id is not None
    unknown = {
        token
        for token, token_id in zip(tokens, input_ids, strict=True)
        if token_id is None or (token_id == tokenizer.unk_token_id and not (own_eos and token == EOS))
    }
    if unknown - {tokenizer.unk_token}:
        raise ValueError(
            f"the tokenizer has no id for {sorted(unknown)}; use "
            "hf_toolssm.tokenization.build_char_tokenizer(), or add the protocol tokens to yours with "
            "hf_toolssm.tokenization.add_tool_tokens()"
        )
    labels = [
        IGNORE_INDEX if role in UNSCORED_ROLES else token_id
        for token_id, role in zip(input_ids, instance.roles(), strict=True)
    ]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "prompt": "".join(instance.prompt),
        "answer": instance.answer,
        "size": instance.size,
        "task": instance.task,
    }


def collate(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad: ``input_ids`` with ``pad_token_id``, ``attention_mask`` with 0, ``labels`` with -100.

    Only those three columns are returned (as ``torch.long`` tensors); bookkeeping columns are dropped.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    length = max(len(example["input_ids"]) for example in examples)

    def padded(column: str, value: int) -> torch.Tensor:
        return torch.tensor(
            [list(example[column]) + [value] * (length - len(example[column])) for example in examples],
            dtype=torch.long,
        )

    return {
        "input_ids": padded("input_ids", pad_token_id),
        "attention_mask": padded("attention_mask", 0),
        "labels": padded("labels", IGNORE_INDEX),
    }


def micro_batches(batch: dict[str, torch.Tensor], max_tokens: int | None) -> list[dict[str, torch.Tensor]]:
    """A right-padded ``batch`` (as :func:`collate` makes it) cut into micro-batches of at most ``max_tokens``
    padded tokens each (rows x the micro-batch's longest row; a longer row is a micro-batch alone): rows sorted
    longest first, each micro-batch trimmed to its own longest row. ``None``: the batch, whole.

    Summing the micro-batches' gradients gives the batch's (models here are causal, so the trimmed padding never
    reached a labelled token) while skipping the padding: training lengths often spread widely (a Hanoi batch
    is ~3.5x padding, its longest trace 7 disks long), and every padded token costs as much as a real one.
    """
    if max_tokens is None:
        return [batch]
    lengths = batch["attention_mask"].sum(1).tolist()  # (b,) tokens per row; the padding follows them
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    groups: list[list[int]] = [[order[0]]]
    for row in order[1:]:
        longest = lengths[groups[-1][0]]  # the first row of a group is its longest
        if (len(groups[-1]) + 1) * longest > max_tokens:
            groups.append([row])
        else:
            groups[-1].append(row)
    return [
        {key: value[torch.tensor(group), : lengths[group[0]]] for key, value in batch.items()}  # (rows, longest)
        for group in groups
    ]


@dataclass
class ToolDataCollator:
    """:func:`collate` as a ``data_collator`` for ``transformers.Trainer`` or a ``DataLoader``."""

    pad_token_id: int

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        return collate(examples, self.pad_token_id)


# --- instance streams ------------------------------------------------------------------------------
def split_rng(split: str, seed: int, size: int | None = None) -> random.Random:
    """The random stream of one split (and, for test sets, one size)."""
    return random.Random(f"hf_toolssm:{split}:{seed}" + ("" if size is None else f":{size}"))


def excluded_prompts(exclude: Iterable[str] | datasets.Dataset | None) -> frozenset[str]:
    """Prompt texts to keep out of training: from a dataset built here (its ``prompt`` column), or texts."""
    if exclude is None:
        return frozenset()
    if isinstance(exclude, datasets.Dataset):
        return frozenset(exclude["prompt"])
    return frozenset(exclude)


def training_instances(
    task: Task,
    seed: int,
    max_size: int | None = None,
    exclude: frozenset[str] = frozenset(),
    split: str = "train",
) -> Iterator[Instance]:
    """Endless instances of the task's training distribution whose prompt is not in ``exclude``."""
    rng = split_rng(split, seed)
    rejected = 0
    while True:
        instance = task.sample_train(rng, max_size)
        if "".join(instance.prompt) in exclude:
            rejected += 1
            if rejected >= MAX_REJECTIONS:
                raise ValueError(
                    f"{MAX_REJECTIONS} training samples in a row were excluded: the excluded prompts cover "
                    f"(nearly) all of {task.name}'s training distribution up to max_size={max_size}; "
                    "exclude fewer prompts or train on larger sizes"
                )
            continue
        rejected = 0
        yield instance


def heldout_instances(
    task: Task, seed: int, size: int, num_samples: int, split: str = "test"
) -> list[Instance]:
    """``num_samples`` instances of the test distribution at ``size``."""
    rng = split_rng(split, seed, size)
    return [task.sample(rng, size) for _ in range(num_samples)]


# --- datasets --------------------------------------------------------------------------------------
def build_dataset(
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    num_samples: int,
    seed: int,
    sizes: int | Sequence[int] | None = None,
    *,
    max_size: int | None = None,
    exclude: Iterable[str] | datasets.Dataset | None = None,
    split: str | None = None,
) -> datasets.Dataset:
    """A tokenized ``datasets.Dataset`` of ``task`` instances.

    ``sizes=None``: ``num_samples`` instances of the training distribution (sizes up to ``max_size``,
    default the paper's), none with a prompt in ``exclude``. ``sizes`` given: ``num_samples`` instances
    of the test distribution *for each* size. ``split`` names the random stream (default ``"train"``
    without sizes, ``"test"`` with them): the same arguments always give the same dataset.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if sizes is None:
        if split == "test":
            raise ValueError("split='test' needs sizes: the test distribution is defined per size")
        stream = training_instances(task, seed, max_size, excluded_prompts(exclude), split or "train")
        instances = [next(stream) for _ in range(num_samples)]
    else:
        if exclude is not None or max_size is not None:
            raise ValueError("exclude and max_size apply to training data (sizes=None), not to test sets")
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        instances = [
            instance
            for size in sizes
            for instance in heldout_instances(task, seed, size, num_samples, split or "test")
        ]
    return datasets.Dataset.from_list([encode_instance(instance, tokenizer) for instance in instances])


def _generate_examples(
    task: Task, tokenizer: PreTrainedTokenizerBase, seed: int, splits: list[str], max_size, exclude
):
    # ``datasets`` hands each worker a sub-list of ``splits`` (its shards); each shard is an endless stream
    for split in splits:
        for instance in training_instances(task, seed, max_size, exclude, split):
            yield encode_instance(instance, tokenizer)


def build_iterable_dataset(
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    *,
    max_size: int | None = None,
    exclude: Iterable[str] | datasets.Dataset | None = None,
    num_shards: int = 1,
) -> datasets.IterableDataset:
    """An endless ``datasets.IterableDataset`` of fresh training examples: every step sees new instances.

    Deterministic for a seed; with one shard it yields the instances :func:`build_dataset` would, in
    order. ``num_shards`` independent streams (random streams ``train/0``, ``train/1``, ...) let
    ``datasets.distributed.split_dataset_by_node`` or DataLoader workers take one each; a consumer given
    several shards reads only the first, since each is endless.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    splits = ["train"] if num_shards == 1 else [f"train/{shard}" for shard in range(num_shards)]
    return datasets.IterableDataset.from_generator(
        _generate_examples,
        gen_kwargs={
            "task": task,
            "tokenizer": tokenizer,
            "seed": seed,
            "splits": splits,
            "max_size": max_size,
            "exclude": excluded_prompts(exclude),
        },
    )
