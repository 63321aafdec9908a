"""Where a model's own decodes leave the reference trace, per test size, and whether they still answer right.

    python eval/decode_divergence.py runs/addition_gru_seed1/final --sizes 50,100 --samples 100 \
        --out eval/results/addition/decode_divergence_gru_seed1.json

``mistake_positions.py`` feeds the reference prefix and lists every token the model would get wrong; this
script lets the model decode freely, with the tools in the loop as ``toolssm eval`` does, and records where
each decode first differs from the reference trace: its offset (0 = the first token after the prompt), the
segment of the reference token there (a command by its tool tag and verb, a thought or the output), the
token expected and the token decoded, how much longer or shorter the decode is, and whether it is the
reference with one edit there (a run of tokens inserted or deleted, or one token replaced) and otherwise the
same. A decode can leave the reference and still answer right: trace exact match then undercounts what the
model can do, and this says how. Test instances are the ones ``toolssm eval`` decodes with the same ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from hf_toolssm.cli import (
    add_test_set_arguments,
    check_output_file,
    load_checkpoint,
    non_negative_int,
    positive_int,
    write_analysis,
)
from hf_toolssm.data import heldout_instances
from hf_toolssm.evaluation import decode_instances, segment_of


def first_difference(reference: list[str], decoded: list[str]) -> int | None:
    """The first offset where the two token lists differ (one ending before the other counts), None if equal."""
    if reference == decoded:
        return None
    shorter = min(len(reference), len(decoded))  # equal up to here: the shorter one ended first
    return next((t for t in range(shorter) if reference[t] != decoded[t]), shorter)


def is_one_edit(reference: list[str], decoded: list[str], offset: int) -> bool:
    """Whether ``decoded`` is ``reference`` with one edit at ``offset`` and the rest the same: a run of tokens
    inserted or deleted there (as many as the lengths differ by), or, at equal lengths, one token replaced."""
    extra = len(decoded) - len(reference)
    if extra > 0:
        return decoded[offset + extra :] == reference[offset:]
    if extra < 0:
        return decoded[offset:] == reference[offset - extra :]
    return decoded[offset + 1 :] == reference[offset + 1 :]


def divergence_rows(model, tokenizer, task, size: int, samples: int, seed: int, batch_size: int) -> list[dict]:
    """Per test instance: the reference and decoded lengths, whether the trace and the answer are right, and
    where and how the decode first leaves the reference (None fields for an exact trace)."""
    instances = heldout_instances(task, seed, size, samples)
    decoded = decode_instances(model, tokenizer, task, instances, batch_size=batch_size, desc=f"size {size}")
    rows = []
    for instance, result in zip(instances, decoded, strict=True):
        full, roles = instance.full_tokens(), instance.roles()
        reference, tokens = full[len(instance.prompt) :], result.generated_tokens
        offset = first_difference(reference, tokens)
        diverged = offset is not None
        in_reference = diverged and offset < len(reference)  # not past the reference's end
        rows.append({
            "trace_tokens": len(reference),
            "decoded_tokens": len(tokens),
            "trace_exact": not diverged,
            "answer_right": bool(task.check(instance, result.answer)),
            "offset": offset,
            # the reference token the decode did not write: what it belongs to, and the two tokens (None where
            # one of the traces has ended)
            "segment": segment_of(full, roles, len(instance.prompt) + offset) if in_reference else None,
            "expected": reference[offset] if in_reference else None,
            "decoded": tokens[offset] if diverged and offset < len(tokens) else None,
            "one_edit": is_one_edit(reference, tokens, offset) if diverged else None,
        })
    return rows


def summarize(rows: list[dict], head: int) -> dict:
    diverged = [row for row in rows if not row["trace_exact"]]
    return {
        "rows": len(rows),
        "trace_exact": len(rows) - len(diverged),
        "answer_right": sum(row["answer_right"] for row in rows),
        "answer_right_trace_not_exact": sum(row["answer_right"] for row in diverged),
        f"diverged_in_the_first_{head}_tokens": sum(row["offset"] < head for row in diverged),
        "diverged_by_one_edit": sum(row["one_edit"] for row in diverged),
        "diverged_by_one_edit_answer_right": sum(row["one_edit"] and row["answer_right"] for row in diverged),
        # the most common first divergences: where, which reference token, which decoded token
        "divergences": [
            {"offset": offset, "segment": segment, "expected": expected, "decoded": token, "rows": count}
            for (offset, segment, expected, token), count in Counter(
                (row["offset"], row["segment"], row["expected"], row["decoded"]) for row in diverged
            ).most_common(10)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_test_set_arguments(parser, samples=20)
    parser.add_argument("--batch-size", type=positive_int, default=50,
                        help="rows decoded together (default: %(default)s)")
    parser.add_argument("--head", type=non_negative_int, default=10,
                        help="trace tokens counted as the start (default: %(default)s)")
    parser.add_argument("--out", help="write the rows and the summary to this JSON file")
    args = parser.parse_args(argv)

    check_output_file(args.out, "--out", "decode_divergence.py")  # before the decoding, not after it
    model, tokenizer, task = load_checkpoint(args.model, args.task, "decode_divergence.py", args.sizes)
    results = []
    for size in args.sizes:
        rows = divergence_rows(model, tokenizer, task, size, args.samples, args.seed, args.batch_size)
        results.append({"size": size, "summary": summarize(rows, args.head), "rows": rows})
        print(f"size {size}: {json.dumps(results[-1]['summary'])}")
    if args.out:
        write_analysis(args.out, "decode_divergence.py", argv, args, task, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
