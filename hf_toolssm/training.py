"""Training on tool traces with Accelerate: one loop for every architecture, resumable, reproducible.

Data are sampled fresh at every step from the task's training distribution, from an RNG seeded by
``(seed, step)``: a run needs no dataset on disk, any step's batch can be rebuilt, and ``--resume`` continues
with exactly the data an uninterrupted run would have seen. Under several processes each takes its slice
of the same global batch and the loss is normalised by the global number of target tokens, so the loss
trajectory is that of one process up to floating-point reduction order.

Optimiser (the paper does not state one): AdamW (betas 0.9/0.95), linear warmup then cosine decay to 10%,
gradient clipping at 1.0. Loss: next-token cross-entropy on thoughts, commands and outputs only; the prompt
and every tool observation are masked (label -100), as in the paper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import json
import logging
import math
import random
import shutil
import signal
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from huggingface_hub.errors import StrictDataclassError
from tqdm.auto import tqdm
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from .checkpoint import check_checkpoint
from .data import IGNORE_INDEX, collate, encode_instance, micro_batches
from .tasks import get_task
from .tokenization import build_char_tokenizer


class TrainingSetupError(ValueError):
    """A run that cannot start as asked (its output folder, the checkpoint it resumes or starts from); the
    message says what to change. The CLI prints it alone; an error inside a training step keeps its traceback."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run after the step in progress, which was checkpointed first:
    ``resume=True`` carries on from ``checkpoint``. A KeyboardInterrupt, so code that handles Ctrl-C still does."""

    def __init__(self, checkpoint: Path, signal_number: int):
        self.checkpoint, self.signal_number = checkpoint, signal_number
        super().__init__(f"{signal.Signals(signal_number).name} at step {checkpoint.name.split('-')[-1]}: saved "
                         f"{checkpoint}; --resume continues from there")


@dataclasses.dataclass
class TrainConfig:
    """One training run. Every field can be set in the YAML file; see ``training/configs/``."""

    output_dir: str
    task: str = "addition"
    task_kwargs: dict = dataclasses.field(default_factory=dict)
    train_max_size: int = 5  # the training distribution's largest size (e.g. operand digits)
    model_type: str = "tool_mamba"  # any AutoConfig model type: tool_mamba, tool_rnn, gpt_neox, mistral
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    #: a checkpoint folder to start from instead of random weights (fine-tuning, as the paper starts its coding
    #: models from pretrained ones); its model type and sizes must be the ones model_type/model_kwargs name
    init_from: str | None = None
    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    save_every: int = 200
    log_every: int = 10
    eval_every: int = 0  # 0: no in-training length-generalization check
    eval_sizes: list = dataclasses.field(default_factory=lambda: [5, 20])
    eval_samples: int = 16
    max_minutes: float | None = None  # stop (and save) after this much wall time
    keep_checkpoints: int | None = None  # keep only the newest N checkpoint-STEP folders; None keeps them all
    #: at most this many padded tokens (rows x longest row) per forward/backward: each process's share of the
    #: batch is sorted by length and cut into micro-batches padded only to their own longest row, whose
    #: gradients add up to the batch's (hf_toolssm.data.micro_batches). Saves the padding of batches whose
    #: lengths spread (a Hanoi batch is ~3.5x padding) and bounds activation memory; None: one forward per step
    micro_batch_tokens: int | None = None
    num_threads: int | None = None  # torch CPU threads; 1 is fastest for tiny models on a busy 2-core machine

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of training options (key: value lines), "
                             f"got a {type(raw).__name__}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training option(s) {unknown}; valid options are {sorted(known)}")
        config = cls(**raw)
        config.validate()
        return config

    def validate(self) -> None:
        """A clear ValueError for an option of the wrong type or out of range (before any step runs: a bad
        ``eval_sizes`` would otherwise fail only at the first ``eval_every``)."""
        self._check_types()
        at_least = {"steps": 1, "batch_size": 1, "train_max_size": 1, "save_every": 1, "log_every": 1,
                    "warmup_steps": 0, "eval_every": 0, "eval_samples": 1, "micro_batch_tokens": 1, "num_threads": 1,
                    "weight_decay": 0, "min_lr_ratio": 0, "keep_checkpoints": 1}
        for name, least in at_least.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"training option {name} must be >= {least}, got {value}")
        for name in ("learning_rate", "max_grad_norm", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"training option {name} must be > 0, got {value}")
        if self.min_lr_ratio > 1:
            raise ValueError(f"min_lr_ratio is the final learning rate's share of the peak: at most 1, got "
                             f"{self.min_lr_ratio}")
        task = get_task(self.task, **self.task_kwargs)  # raises a clear error for an unknown task or bad arguments
        if self.eval_every:
            if not (isinstance(self.eval_sizes, list) and self.eval_sizes):
                raise ValueError(f"eval_sizes must be a list of sizes, e.g. [5, 20], got {self.eval_sizes!r}")
            for size in self.eval_sizes:
                task.validate_size(size, "eval_sizes")
        check_model_kwargs(self.model_type, self.model_kwargs)

    def _check_types(self) -> None:
        """Each option has its annotated type. YAML 1.1 reads ``2e-3`` (no dot) as a string: a float option takes
        it as the number it spells."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, expected = getattr(self, field.name), hints[field.name]
            allowed = typing.get_args(expected) or (expected,)  # X | None -> (X, NoneType)
            if float in allowed and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = float(value)
                    setattr(self, field.name, value)
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                continue  # an int is a fine float
            if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
                names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
                raise ValueError(f"training option {field.name} must be {names}, got {value!r}")


def check_model_kwargs(model_type: str, model_kwargs: dict) -> None:
    """A clear error for a model_kwargs key the model's config does not know. transformers' configs keep any
    unknown keyword as a plain attribute, so a typo (``hidden_sise``) would train the default size in silence.
    Known: the config class's arguments and default attributes, and legacy names it converts on the way in
    (GPT-NeoX's ``rotary_pct`` goes into ``rope_parameters``: it is not stored under its own name)."""
    if model_type not in CONFIG_MAPPING:  # transformers' own message lists all of its several hundred
        raise ValueError(f"unknown model_type {model_type!r}: hf_toolssm's are tool_mamba and tool_rnn (model_kwargs "
                         "cell_type: lstm or gru), the baselines here gpt_neox and mistral; any AutoConfig model type "
                         "works")
    try:
        built = AutoConfig.for_model(model_type, **model_kwargs)
    except StrictDataclassError as error:  # a validated config's complaint (heads that do not divide the width)
        raise ValueError(f"model_kwargs of {model_type}: {error.__cause__ or error}") from None
    config_class = type(built)
    arguments = set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    known = arguments | set(config_class().to_dict())
    stored = built.to_dict()
    unknown = sorted(key for key in model_kwargs if key not in known and key in stored)
    if unknown:
        hints = "".join(f"; {key!r}: did you mean {close[0]!r}?" for key in unknown
                        if (close := difflib.get_close_matches(key, sorted(known), n=1)))
        raise ValueError(f"model_kwargs: {config_class.__name__} has no option(s) {unknown}{hints}; its arguments "
                         f"are {sorted(arguments)}")


def build_model(config: TrainConfig, tokenizer) -> PreTrainedModel:
    """The model a run starts from: a fresh ``config.model_type`` sized by ``model_kwargs`` with the tokenizer's
    vocabulary, or the weights of ``config.init_from``."""
    torch.manual_seed(config.seed)
    model = _initial_checkpoint(config, tokenizer) if config.init_from else _fresh_model(config, tokenizer)
    # Every checkpoint names its task, so `toolssm solve/eval` need nothing else (any config class keeps
    # an extra attribute through save_pretrained).
    model.config.tool_config = {
        "task": config.task, "task_kwargs": config.task_kwargs, "train_max_size": config.train_max_size,
    }
    if config.init_from:  # provenance for the model card: which checkpoint this run continued
        model.config.tool_config["init_from"] = str(config.init_from)
    return model


def _architecture(config: TrainConfig, tokenizer) -> PreTrainedConfig:
    """The model config ``config`` trains: its model_kwargs plus the tokenizer's vocabulary and special ids."""
    kwargs = dict(config.model_kwargs)
    kwargs.update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )
    return AutoConfig.for_model(config.model_type, **kwargs)


def _fresh_model(config: TrainConfig, tokenizer) -> PreTrainedModel:
    return AutoModelForCausalLM.from_config(_architecture(config, tokenizer))


#: config fields that say where a checkpoint came from or what it was trained on, not what it is
#: (auto_map: where a Hub copy finds its remote code, as in the shipped model cards)
_NOT_ARCHITECTURE = {"_name_or_path", "architectures", "auto_map", "dtype", "torch_dtype", "transformers_version",
                     "tool_config"}


def _initial_checkpoint(config: TrainConfig, tokenizer) -> PreTrainedModel:
    """``config.init_from``'s model, checked against the architecture the config names (every task shares the
    character vocabulary, so a checkpoint of one task can start another)."""
    path = Path(config.init_from)  # checked here, not in validate(): a config may name a run not trained yet
    if not (path / "config.json").is_file():
        raise TrainingSetupError(f"init_from: {str(path)!r} is not a checkpoint folder (no config.json); train it "
                                 f"first (`bash eval/run_experiment.sh` does so for a runs/NAME_seedS/final it lacks) "
                                 f"or point init_from at a folder written by save_pretrained")
    try:
        check_checkpoint(path)
    except ValueError as error:
        raise TrainingSetupError(f"init_from: {error}") from None
    model = AutoModelForCausalLM.from_pretrained(path)
    # Whole configs compared, both as transformers normalises them: a model_kwargs key may live elsewhere once
    # loaded (GPT-NeoX's rotary_pct becomes rope_parameters["partial_rotary_factor"]).
    wanted = _architecture(config, tokenizer).to_dict()
    found = model.config.to_dict()
    differ = {key: (wanted.get(key), found.get(key)) for key in sorted(wanted.keys() | found.keys())
              if key not in _NOT_ARCHITECTURE and wanted.get(key) != found.get(key)}
    if differ:
        listed = ", ".join(f"{key}: the config says {want!r}, the checkpoint has {have!r}"
                           for key, (want, have) in differ.items())
        raise TrainingSetupError(f"init_from {str(path)!r} does not match this config ({listed}); make model_type "
                                 f"and model_kwargs those of the checkpoint")
    return model


def batch_for_step(config: TrainConfig, task, tokenizer, step: int) -> dict[str, torch.Tensor]:
    """The global batch of ``step``: fresh training instances from an RNG seeded by (seed, step)."""
    rng = random.Random(f"{config.seed}:{step}")
    examples = [encode_instance(task.sample_train(rng, config.train_max_size), tokenizer)
                for _ in range(config.batch_size)]
    return collate(examples, pad_token_id=tokenizer.pad_token_id)


def masked_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over labelled positions. logits (b, l, v), labels (b, l)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def target_count(batch: dict[str, torch.Tensor]) -> int:
    """The labelled next-token targets of a batch: what :func:`masked_lm_loss_sum` sums over."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def accumulate_gradients(accelerator, model, parts: list[dict[str, torch.Tensor]], *, targets: int, world: int):
    """Backward through every micro-batch of this process's share; returns the share's loss (detached).

    Each part's loss sum is normalised by the *global* target count ``targets``, so the parts' gradients add up
    to the batch's; DDP averages gradients over processes, so each is scaled by ``world``. Only the last part's
    backward synchronises processes (the others run under ``no_sync``, as in gradient accumulation), so
    processes may cut their shares into different numbers of parts.
    """
    loss = torch.zeros((), device=accelerator.device)
    for i, part in enumerate(parts):
        with contextlib.nullcontext() if i == len(parts) - 1 else accelerator.no_sync(model):
            # No attention mask: batches are right-padded and every model here is causal, so no labelled token
            # sees a pad and the mask changes nothing the loss reads (tests/test_training.py holds this for each
            # model type). Without it, SDPA takes its fused causal kernel instead of materialising an l x l
            # mask: the attention baselines train faster on long traces (the coding task).
            logits = model(input_ids=part["input_ids"]).logits  # (rows, l, vocab)
            part_loss = masked_lm_loss_sum(logits, part["labels"]) / targets * world
            accelerator.backward(part_loss)
        loss += part_loss.detach()
    return loss


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints, oldest first. ``trainer_state.json`` is written last (:func:`_save_checkpoint`),
    so a checkpoint a kill cut short has none and is not listed."""
    complete = [path for path in output_dir.glob("checkpoint-*") if (path / "trainer_state.json").is_file()]
    return sorted(complete, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint: a resume starts from it, skipping one a kill cut short."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


#: what a checkpoint was trained as: a resumed run must keep these (steps, time budget, logging may change)
_RUN_IDENTITY = ("task", "task_kwargs", "train_max_size", "model_type", "model_kwargs", "init_from", "seed",
                 "batch_size")


def _checkpoint_to_resume(config: TrainConfig, output_dir: Path, resume: bool) -> Path | None:
    """The checkpoint a run continues from (None: it starts afresh), or a TrainingSetupError: a fresh run into a
    folder that holds one (its checkpoints would mix with the old ones, and a later --resume would pick the newest
    of either), or a resume with a config that is not the checkpoint's (other sizes, data or seed)."""
    checkpoint = latest_checkpoint(output_dir)
    if not resume:
        if checkpoint is not None or (output_dir / "final").is_dir():
            found = checkpoint.name if checkpoint is not None else "final"
            raise TrainingSetupError(f"{output_dir} already holds a run ({found}); pass --resume to continue it, "
                                     "or give another --output-dir (or delete this one) to start afresh")
        return None
    saved_path = output_dir / "train_config.yaml"
    if checkpoint is None or not saved_path.is_file():
        return checkpoint
    saved = yaml.safe_load(saved_path.read_text()) or {}
    differ = [f"{key}: {saved[key]!r} there, {getattr(config, key)!r} now" for key in _RUN_IDENTITY
              if key in saved and saved[key] != getattr(config, key)]
    if differ:
        raise TrainingSetupError(f"--resume: {output_dir} holds a run of another config ({'; '.join(differ)}); "
                                 f"resume it with its own ({saved_path}) or start afresh in another --output-dir")
    if saved.get("steps", config.steps) != config.steps:
        print(f"--resume: the run now ends at step {config.steps}, not {saved['steps']}: the learning rate decays "
              "over the new length from here on", file=sys.stderr)
    return checkpoint


def train(
    config: TrainConfig, *, resume: bool = False, stop_at: int | None = None, accelerator: Accelerator | None = None
) -> Path:
    """Train, checkpointing to ``output_dir/checkpoint-STEP`` and ``output_dir/final``; return the final folder.

    ``stop_at`` ends this run early (with a checkpoint) at that step, as an interruption would; a later
    ``resume=True`` run carries on exactly where it stopped.
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    output_dir = Path(config.output_dir)
    checkpoint = _checkpoint_to_resume(config, output_dir, resume)
    tokenizer = build_char_tokenizer()
    task = get_task(config.task, **config.task_kwargs)
    model = build_model(config, tokenizer)
    # said up front: a config without model_kwargs trains the model type's default size (Mamba's: 130M)
    accelerator.print(f"{config.model_type}: {model.num_parameters():,} parameters, {config.task} to size "
                      f"{config.train_max_size}, {config.steps:,} steps of {config.batch_size}")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    # No LR scheduler object: the rate is a function of the step (learning_rate_at, set before each update),
    # so nothing about it is checkpointed and a resumed run cannot drift. Accelerate's scheduler wrapper would
    # also step once per process per update, as if each process loaded its own batch; here they split one.
    model, optimizer = accelerator.prepare(model, optimizer)

    start_step, elapsed_before = 0, 0.0  # elapsed_s counts running time over every invocation of the run
    if resume and checkpoint is None:
        accelerator.print(f"--resume: no checkpoint in {output_dir}, starting from step 0")
    elif checkpoint is not None:
        accelerator.load_state(str(checkpoint / "accelerate_state"))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        start_step, elapsed_before = state["step"], state.get("elapsed_s", 0.0)
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    log_path = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))
        if log_path.exists():  # steps logged after the checkpoint we resume from are about to be run again
            kept = [line for line in log_path.read_text().splitlines() if _logged_step(line) <= start_step]
            log_path.write_text("".join(line + "\n" for line in kept))
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size % world:
        raise TrainingSetupError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                                 f"({world})")
    share = config.batch_size // world
    started = time.monotonic()
    bar = tqdm(total=config.steps, initial=start_step, desc="training", disable=not accelerator.is_main_process)
    model.train()
    step = start_step
    with _StopRequests() as requests:
        while step < config.steps:
            batch = batch_for_step(config, task, tokenizer, step)
            targets = target_count(batch)
            local = {k: v[rank * share : (rank + 1) * share].to(accelerator.device) for k, v in batch.items()}
            loss = accumulate_gradients(accelerator, model, micro_batches(local, config.micro_batch_tokens),
                                        targets=targets, world=world)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            learning_rate = learning_rate_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)

            if step % config.log_every == 0 or step in (1, config.steps):
                # Reduced only when logged: a collective (every rank takes this branch) and a synchronisation.
                global_loss = accelerator.reduce(loss.detach() / world, reduction="sum").item()
                if accelerator.is_main_process:
                    elapsed = round(elapsed_before + time.monotonic() - started, 2)
                    record = {"step": step, "loss": global_loss, "lr": learning_rate, "grad_norm": float(grad_norm),
                              "elapsed_s": elapsed}
                    with log_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.set_postfix(loss=f"{global_loss:.4f}")
            signal_number = _agreed_stop_signal(accelerator, requests.signal_number)
            if signal_number:
                accelerator.print(f"\n{signal.Signals(signal_number).name}: saving checkpoint-{step} before stopping "
                                  "(signal again to stop at once, without it)", file=sys.stderr)
            length_check = config.eval_every and step % config.eval_every == 0 and not signal_number
            if length_check and accelerator.is_main_process:
                _length_check(accelerator.unwrap_model(model), tokenizer, task, config, step, log_path)
                model.train()
            out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
            interrupted = (stop_at is not None and step >= stop_at) or signal_number
            if step % config.save_every == 0 or step == config.steps or out_of_time or interrupted:
                _save_checkpoint(accelerator, model, tokenizer, output_dir / f"checkpoint-{step}", step,
                                 elapsed_before + time.monotonic() - started, keep=config.keep_checkpoints)
            if interrupted:
                bar.close()
                if signal_number:
                    raise TrainingInterrupted(output_dir / f"checkpoint-{step}", signal_number)
                return output_dir / f"checkpoint-{step}"
            if out_of_time:  # the time budget is spent: finish here (the final model is this step's)
                accelerator.print(f"max_minutes={config.max_minutes} reached at step {step}; "
                                  "--resume continues the schedule")
                break
    bar.close()

    final = output_dir / "final"
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(final)
        tokenizer.save_pretrained(final)
        plot_loss_curve(log_path, output_dir / "loss_curve.png")
    accelerator.wait_for_everyone()
    return final


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl record; infinity for a line a kill cut short (it is dropped on resume)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """The rate of update ``step`` (0-based): linear warmup, then cosine decay from the peak to ``min_lr_ratio``
    of it."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    ratio = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.learning_rate * ratio


def _save_checkpoint(accelerator: Accelerator, model, tokenizer, path: Path, step: int, elapsed: float,
                     keep: int | None = None) -> None:
    """Save ``path`` (trainer_state.json last: it marks the checkpoint complete), then delete all but the newest
    ``keep`` complete checkpoints."""
    accelerator.wait_for_everyone()
    with _quiet_tied_weights_warning():
        accelerator.save_state(str(path / "accelerate_state"))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(path)
        tokenizer.save_pretrained(path)
        (path / "trainer_state.json").write_text(json.dumps(
            {"step": step, "num_processes": accelerator.num_processes, "elapsed_s": round(elapsed, 2)}))
        if keep is not None:
            for old in complete_checkpoints(path.parent)[:-keep]:
                shutil.rmtree(old)


def _agreed_stop_signal(accelerator, signal_number: int | None) -> int | None:
    """The signal any process received this step, the same on every process. A checkpoint is collective (its
    save waits for every process): a process that stopped to save alone would leave the others waiting in it."""
    if accelerator.num_processes == 1:
        return signal_number
    agreed = accelerator.reduce(torch.tensor(signal_number or 0, device=accelerator.device), reduction="max")
    return int(agreed.item()) or None


class _StopRequests:
    """Catches SIGINT (Ctrl-C) and SIGTERM while a run trains: the first asks the loop to stop after the step in
    progress, with a checkpoint (an interrupted optimizer step would leave a state no resume can trust); the
    previous handlers then return, so a second signal stops at once. A signal the process ignores (SIGINT in a
    job a shell started in the background) stays ignored. Python runs signal handlers on the main thread only, so
    a run on another thread keeps the default behaviour."""

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._request)
        return self

    def _request(self, number: int, frame) -> None:  # no printing here: the handler may interrupt a print
        self.signal_number = number
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()

    def __exit__(self, *exc_info) -> None:
        self._restore()


class _TiedWeightsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tied_weights_warning():
    """Accelerate's safetensors save drops the tied ``lm_head.weight`` (it aliases the embeddings) and warns at
    every checkpoint; ``load_state`` loads into the same tied module, so nothing is lost (the resume test holds a
    resumed run equal to an uninterrupted one). Only that message is silenced, only during the save."""
    logger, quiet = logging.getLogger("accelerate.utils.other"), _TiedWeightsFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _length_check(model, tokenizer, task, config: TrainConfig, step: int, log_path: Path) -> None:
    """A quick in-training look at length generalization: exact answers at a few sizes, on a random
    stream of its own (``length-check``), so the final evaluation's test instances stay unseen."""
    from .evaluation import evaluate_length_generalization

    results = evaluate_length_generalization(
        model, tokenizer, task, config.eval_sizes,
        samples=config.eval_samples, seed=config.seed, batch_size=config.eval_samples, token_accuracy=False,
        progress=False, split="length-check",
    )
    record = {"step": step, **{f"answer_acc@{r.size}": r.answer_exact_match for r in results}}
    with log_path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def plot_loss_curve(log_path: Path, png_path: Path) -> None:
    """Training loss (log scale) against step, from the metrics log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if '"loss"' in line]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], marker="o" if len(records) < 20 else None)
    ax.set(xlabel="step", ylabel="training loss (masked CE)", yscale="log", title=log_path.parent.name)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
