"""The `transformers.Trainer` route: the same model and data, for users who know the Trainer.

    python training/trainer_example.py --output-dir runs/trainer_example --steps 300

Data: a fixed `datasets.Dataset` of tool traces (`hf_toolssm.data.build_dataset`), labels already masked
(prompt and observations are -100), padded by `ToolDataCollator`. Model: tool_mamba, tool_rnn, gpt_neox or
mistral, 2 layers of width 64 (256 for the LSTM and GRU) as in training/configs/.
"""

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

import hf_toolssm  # noqa: F401  (registers tool_mamba / tool_rnn with the Auto classes)
from hf_toolssm.data import ToolDataCollator, build_dataset
from hf_toolssm.tasks import get_task
from hf_toolssm.tokenization import build_char_tokenizer

#: Beyond width and depth, what the attention baselines need to be small (transformers' defaults are 1.4B-sized:
#: GPT-NeoX would get 64 heads of width 1 and a 24,576-wide MLP); as in training/configs/.
SMALL_ATTENTION = {"num_attention_heads": 4, "intermediate_size": 128}
SIZES = {"tool_mamba": {}, "tool_rnn": {}, "gpt_neox": SMALL_ATTENTION,
         "mistral": {**SMALL_ATTENTION, "num_key_value_heads": 4}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/trainer_example")
    parser.add_argument("--task", default="addition")
    parser.add_argument("--model-type", default="tool_mamba", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--num-threads", type=int, default=1,
                        help="torch CPU threads (default: 1, the fastest for models this small)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)

    tokenizer = build_char_tokenizer()
    task = get_task(args.task)
    train_dataset = build_dataset(task, tokenizer, num_samples=args.steps * args.batch_size, seed=0)
    config = AutoConfig.for_model(
        args.model_type, hidden_size=64, num_hidden_layers=2, **SIZES[args.model_type], vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        # what the checkpoint was trained for: toolssm solve / eval and the model card read it
        tool_config={"task": args.task, "task_kwargs": {}, "train_max_size": task.default_train_max_size},
    )
    model = AutoModelForCausalLM.from_config(config)
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=min(50, args.steps // 10),
        weight_decay=0.01, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=10, save_steps=max(1, args.steps // 2),
        report_to=[], remove_unused_columns=False, use_cpu=True, dataloader_num_workers=0,
        # batches of traces of like length: less padding (our own loop's micro_batch_tokens does this per step)
        train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_dataset,
        data_collator=ToolDataCollator(tokenizer.pad_token_id), processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")
    return trainer


if __name__ == "__main__":
    main()
