"""The README's main job: the shipped addition model solves fresh additions far longer than it trained on.

Any other checkpoint works too (``toolssm demo --model FOLDER``): the task and its training size come from the
checkpoint's ``tool_config``. Exit code 0 when every answer at every size is right.
"""

from __future__ import annotations

from pathlib import Path

from .tools.base import Role


def run_demo(model_path: str, *, sizes: list[int], samples: int, out: str) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # hf_toolssm/__init__ registered our models

    from .data import heldout_instances
    from .evaluation import plot_accuracy_vs_size, score_instances, warm_up, write_results
    from .metrics import load_tool_trace_accuracy
    from .tasks import checkpoint_task, checkpoint_tool_config

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tool_config = checkpoint_tool_config(model_path, model.config)
    task = checkpoint_task({"task": "addition", **tool_config})  # one that names no task: the demo's addition
    for size in sizes:  # before any decoding: a logical graph has no 3-node size, say
        task.validate_size(size, "--sizes")
    params = sum(p.numel() for p in model.parameters())
    train_max_size = tool_config.get("train_max_size", task.default_train_max_size)
    print(f"{Path(model_path).name}: {model.config.model_type}, {params:,} parameters, trained on {task.name} "
          f"up to {train_max_size} {task.size_unit}")
    metric = load_tool_trace_accuracy()
    print("warming up (a machine's first run compiles the fused CPU kernel: about a minute) ...", end=" ", flush=True)
    print(f"{warm_up(model):.1f}s")
    results, example = [], None
    for size in sizes:
        instances = heldout_instances(task, 2026, size, samples)
        result, decoded = score_instances(model, tokenizer, task, instances, size=size, batch_size=samples,
                                          token_accuracy=False, metric=metric)
        print(f"{size:>6} {task.size_unit}: {round(result.answer_exact_match * samples)}/{samples} answers correct, "
              f"{round(result.trace_exact_match * samples)}/{samples} traces exact, "
              f"{result.mean_trace_tokens:,.0f} trace tokens each, {result.seconds:.1f}s "
              f"({result.decode_tokens_per_s:,.0f} tok/s)")
        results.append(result)
        example = example or decoded[0]

    print(f"\nTrace excerpt (first instance at size {sizes[0]}; [role] text), one window per phase:")
    segments = example.segments()
    phases = (("prompt", Role.PROMPT, 4), ("first thoughts", Role.THOUGHT, 8), ("answer", Role.OUTPUT, 6))
    for title, role, width in phases:
        first = next((i for i, (r, _) in enumerate(segments) if r is role), None)
        if first is None:
            continue
        start = max(0, first - 1) if role is not Role.PROMPT else 0
        print(f"  -- {title}")
        for r, text in segments[start : start + width]:
            print(f"  [{r.value}] {text[:90]}")
    print(f"  answer: {example.answer}")

    out_dir = Path(out)
    write_results(out_dir / "demo_results.json", results, model=model_path, task=task.name)
    plot_accuracy_vs_size({Path(model_path).name: results}, out_dir / "demo_accuracy.png",
                          title=f"{task.name} with tools in the loop: exact trace", train_max_size=train_max_size)
    print(f"\nwrote {out_dir / 'demo_results.json'} and {out_dir / 'demo_accuracy.png'}")
    return 0 if all(r.answer_exact_match == 1.0 for r in results) else 1
