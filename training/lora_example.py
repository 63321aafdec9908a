"""LoRA on ToolMamba with PEFT: adapt a trained checkpoint to a new task and save only the adapter.

    python training/lora_example.py --base model_cards/toolmamba-addition --task multiplication --steps 100

Target modules: the mixer's four projections, `in_proj`, `x_proj`, `dt_proj`, `out_proj` (the conv, A_log and
D stay frozen). On CUDA, mamba-ssm's fused training kernel reads x_proj/dt_proj/out_proj weights directly
and would skip the adapters: ToolMambaMixer detects wrapped projections and takes the unfused path instead.
"""

import argparse
import os

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_toolssm  # noqa: F401
from hf_toolssm.data import collate, encode_instance, training_instances
from hf_toolssm.tasks import get_task
from hf_toolssm.training import masked_lm_loss_sum, target_count

#: The ToolMamba modules LoRA adapts.
TOOL_MAMBA_LORA_TARGETS = ["in_proj", "x_proj", "dt_proj", "out_proj"]


def lora_model(base, rank: int = 8):
    """Wrap a ToolMamba model with LoRA adapters on the mixer projections."""
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TOOL_MAMBA_LORA_TARGETS,
                        task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="model_cards/toolmamba-addition")
    parser.add_argument("--task", default="multiplication")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output-dir", default="runs/lora_example")
    args = parser.parse_args(argv)

    base = os.path.abspath(args.base) if os.path.isdir(args.base) else args.base  # the adapter records this path
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = lora_model(AutoModelForCausalLM.from_pretrained(base))
    model.print_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    stream = training_instances(get_task(args.task), seed=0)
    model.train()
    for step in range(args.steps):
        examples = [encode_instance(next(stream), tokenizer) for _ in range(args.batch_size)]
        batch = collate(examples, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = masked_lm_loss_sum(logits, batch["labels"]) / target_count(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f}")
    model.save_pretrained(args.output_dir)  # the adapter only; load with PeftModel.from_pretrained(base, dir)
    print(f"adapter saved to {args.output_dir}. The base's config still names its own task: after "
          f"merge_and_unload(), set config.tool_config['task'] = {args.task!r} before save_pretrained, or pass "
          f"--task {args.task} to toolssm solve/eval")


if __name__ == "__main__":
    main()
