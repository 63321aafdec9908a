"""Where in the trace a model's teacher-forced mistakes fall, per test size.

    python eval/mistake_positions.py runs/logical_graph_tool_mamba_seed0/final --sizes 50,100 --samples 20 \
        --out eval/results/logical_graph/mistake_positions.json

A model that fails beyond its training sizes either drifts (mistakes spread over the whole trace, more
the longer it runs) or is thrown at one place (e.g. the first tokens after a prompt longer than any it
trained on) and is right elsewhere. Fed the reference prefix, every row's mistakes are listed by their
offset into the trace (0 = the first token after the prompt), the segment it falls in (a command, named
by its tool tag and verb such as ``[code]open``, a thought or the output), the text before it and the
token expected and predicted; the summary counts rows whose first mistake is in the first ``--head``
trace tokens, mistakes past them, and mistakes by segment. Test instances are the ones ``toolssm eval``
decodes with the same ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from tqdm.auto import tqdm

from hf_toolssm.cli import add_test_set_arguments, check_output_file, load_checkpoint, non_negative_int, write_analysis
from hf_toolssm.data import heldout_instances
from hf_toolssm.evaluation import model_token_positions, segment_of, teacher_forced_mistakes


def mistake_rows(model, tokenizer, task, size: int, samples: int, seed: int, context: int) -> list[dict]:
    """Per test instance: its trace length, the tokens the model writes per segment, and its teacher-forced
    mistakes: trace offset, segment, the ``context`` characters before it, the expected and predicted token."""
    rows = []
    for instance in tqdm(heldout_instances(task, seed, size, samples), total=samples, desc=f"size {size}"):
        mistakes, _ = teacher_forced_mistakes(model, tokenizer, instance, context_chars=context)
        tokens, roles = instance.full_tokens(), instance.roles()
        segments = Counter(segment_of(tokens, roles, t) for t in model_token_positions(roles))
        rows.append({
            "trace_tokens": len(instance.trace.tokens),
            "model_tokens_by_segment": dict(segments),
            "mistakes": [{"offset": mistake.position - len(instance.prompt), "segment": mistake.segment,
                          "context": mistake.context, "expected": mistake.expected, "predicted": mistake.predicted}
                         for mistake in mistakes],
        })
    return rows


def summarize(rows: list[dict], head: int) -> dict:
    mistakes = [mistake for row in rows for mistake in row["mistakes"]]
    written = sum((Counter(row["model_tokens_by_segment"]) for row in rows), Counter())
    wrong = Counter(mistake["segment"] for mistake in mistakes)
    return {
        "rows": len(rows),
        "rows_with_a_mistake": sum(1 for row in rows if row["mistakes"]),
        f"rows_whose_first_mistake_is_in_the_first_{head}_tokens": sum(
            1 for row in rows if row["mistakes"] and row["mistakes"][0]["offset"] < head
        ),
        "mistakes": len(mistakes),
        f"mistakes_past_token_{head}": sum(1 for mistake in mistakes if mistake["offset"] >= head),
        "trace_tokens": sum(row["trace_tokens"] for row in rows),
        # which copies go wrong: by the command (tool tag and verb), thought or output they fall in, the trace
        # tokens the model writes (observations excluded), its mistakes, and the share of those tokens it gets wrong
        "model_tokens_by_segment": dict(written.most_common()),
        "mistakes_by_segment": {segment: wrong[segment] for segment in written},
        "mistake_rate_by_segment": {segment: round(wrong[segment] / written[segment], 4) for segment in written},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_test_set_arguments(parser, samples=20)
    parser.add_argument("--head", type=non_negative_int, default=100,
                        help="trace tokens counted as the start (default: %(default)s)")
    parser.add_argument("--context", type=non_negative_int, default=80,
                        help="characters before each mistake kept in the JSON (default: %(default)s)")
    parser.add_argument("--max-listed", type=non_negative_int, default=None, metavar="N",
                        help="list only each row's first N mistakes in the JSON; the summary still counts them all "
                             "(a model that drifts makes thousands a row; default: list all)")
    parser.add_argument("--out", help="write the rows and the summary to this JSON file")
    args = parser.parse_args(argv)

    check_output_file(args.out, "--out", "mistake_positions.py")  # before the decoding, not after it
    model, tokenizer, task = load_checkpoint(args.model, args.task, "mistake_positions.py", args.sizes)
    results = []
    for size in args.sizes:
        rows = mistake_rows(model, tokenizer, task, size, args.samples, args.seed, args.context)
        summary = summarize(rows, args.head)
        if args.max_listed is not None:
            for row in rows:
                row["mistakes_not_listed"] = max(0, len(row["mistakes"]) - args.max_listed)
                row["mistakes"] = row["mistakes"][:args.max_listed]
        results.append({"size": size, "summary": summary, "rows": rows})
        print(f"size {size}: {json.dumps(results[-1]['summary'])}")
    if args.out:
        write_analysis(args.out, "mistake_positions.py", argv, args, task, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
