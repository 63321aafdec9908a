"""Training: the loss goes down, resume is exact, the Trainer and PEFT routes run, two processes agree."""

import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import hf_toolssm  # noqa: F401
from hf_toolssm.training import TrainConfig, TrainingSetupError, latest_checkpoint, learning_rate_at, train
from hf_toolssm.training import batch_for_step as build_batch

ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}


def tiny_config(output_dir, **overrides) -> TrainConfig:
    options = dict(
        output_dir=str(output_dir), task="addition", train_max_size=3, model_type="tool_mamba", model_kwargs=TINY,
        steps=6, batch_size=8, learning_rate=3e-3, warmup_steps=2, save_every=3, log_every=1, seed=0,
    )
    options.update(overrides)
    return TrainConfig(**options)


def logged(output_dir, key: str) -> dict[int, float]:
    """``key`` of each training record in ``metrics.jsonl``, by step."""
    records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if "loss" in r}


def losses(output_dir) -> dict[int, float]:
    return logged(output_dir, "loss")


def test_the_learning_rate_warms_up_then_decays_to_its_floor(tmp_path):
    config = tiny_config(tmp_path, steps=6, warmup_steps=2)
    rates = [learning_rate_at(step, config) for step in range(config.steps)]
    peak, floor = config.learning_rate, config.learning_rate * config.min_lr_ratio
    assert rates[:3] == pytest.approx([peak / 2, peak, peak])  # the decay starts at the peak
    assert all(a > b for a, b in itertools.pairwise(rates[2:]))
    assert rates[-1] > floor and learning_rate_at(config.steps, config) == pytest.approx(floor)
    train(config)
    # each record's rate is the one its update used (update k is step k + 1 in the log)
    assert logged(tmp_path, "lr") == pytest.approx({k + 1: rate for k, rate in enumerate(rates)})


def test_a_few_steps_decrease_the_loss(tmp_path):
    final = train(tiny_config(tmp_path, steps=25, batch_size=16, save_every=25))
    curve = losses(tmp_path)
    assert curve[25] < 0.7 * curve[1]
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    config = json.loads((final / "config.json").read_text())
    assert config["tool_config"]["task"] == "addition"


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    train(tiny_config(tmp_path / "straight"))
    interrupted = train(tiny_config(tmp_path / "resumed"), stop_at=3)
    assert interrupted.name == "checkpoint-3" and not (tmp_path / "resumed" / "final").exists()
    log = tmp_path / "resumed" / "metrics.jsonl"
    with log.open("a") as f:  # a kill after the checkpoint leaves later steps in the log; the resume runs them again
        f.write(json.dumps({"step": 4, "loss": 99.0}) + "\n" + '{"step": 5, "lo')  # and a line the kill cut short
    train(tiny_config(tmp_path / "resumed"), resume=True)
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == sorted(straight) == [1, 2, 3, 4, 5, 6]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6)
    elapsed = logged(tmp_path / "resumed", "elapsed_s")  # running time over both invocations, not since the resume
    assert elapsed[4] >= elapsed[3] > 0


def signalled_at(step_to_signal: int, *signals: int):
    """A batch_for_step that sends this process ``signals`` while the loop builds that step's batch, as a Ctrl-C
    or a kill from outside would arrive mid-step."""
    import signal

    def batch_for_step(config, task, tokenizer, step):
        if step == step_to_signal:
            for number in signals:
                signal.raise_signal(number)
        return build_batch(config, task, tokenizer, step)

    return batch_for_step


def test_a_signal_mid_step_saves_that_step_and_the_resume_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    import signal

    from hf_toolssm import training

    train(tiny_config(tmp_path / "straight"))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(training, "batch_for_step", signalled_at(3, signal.SIGTERM))
    with pytest.raises(training.TrainingInterrupted, match=r"SIGTERM at step 4: saved .*checkpoint-4; --resume"):
        train(tiny_config(tmp_path / "resumed"))  # save_every=3: step 4 is saved only because of the signal
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    assert latest_checkpoint(tmp_path / "resumed") == tmp_path / "resumed" / "checkpoint-4"
    monkeypatch.undo()
    train(tiny_config(tmp_path / "resumed"), resume=True)
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as in an interactive Python: a job a shell starts in the background (CI's) has it ignored."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_second_signal_stops_at_once_and_the_cli_exits_with_the_signals_code(tmp_path, monkeypatch, capsys,
                                                                              ctrl_c_raises):
    import signal

    from hf_toolssm import training
    from hf_toolssm.cli import main

    monkeypatch.setattr(training, "batch_for_step", signalled_at(1, signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(tiny_config(tmp_path / "twice"))
    assert type(stopped.value) is KeyboardInterrupt  # Python's own: no checkpoint of the unfinished step
    assert latest_checkpoint(tmp_path / "twice") is None

    monkeypatch.setattr(training, "batch_for_step", signalled_at(1, signal.SIGINT))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(tiny_config(tmp_path / "once"))))
    assert main(["train", "--config", str(path)]) == 128 + signal.SIGINT  # a script sees an interrupted run
    err = capsys.readouterr().err
    assert "SIGINT: saving checkpoint-2 before stopping" in err
    assert "toolssm train: SIGINT at step 2: saved" in err and (tmp_path / "once" / "checkpoint-2").is_dir()


def test_an_ignored_sigint_stays_ignored(tmp_path, monkeypatch):
    """A background job's Ctrl-C belongs to the terminal's foreground: the run neither stops nor saves."""
    import signal

    from hf_toolssm import training

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        monkeypatch.setattr(training, "batch_for_step", signalled_at(1, signal.SIGINT))
        final = train(tiny_config(tmp_path, save_every=10))
        assert final.name == "final" and latest_checkpoint(tmp_path).name == "checkpoint-6"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_keep_checkpoints_deletes_all_but_the_newest(tmp_path, caplog):
    train(tiny_config(tmp_path, save_every=1, keep_checkpoints=2))
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]
    # the tied lm_head that accelerate drops from its safetensors copy (and load_state re-ties) is not warned about
    assert not [record for record in caplog.records if "Removed shared tensor" in record.getMessage()]


def test_resume_skips_a_checkpoint_a_kill_cut_short(tmp_path):
    for step in (3, 6):
        (tmp_path / f"checkpoint-{step}" / "accelerate_state").mkdir(parents=True)
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"step": 3, "num_processes": 1}))
    # checkpoint-6 has its accelerate state (saved first) but no trainer_state.json (saved last)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_bad_training_options_say_what_is_wrong(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "x", "stepz": 3}))
    with pytest.raises(ValueError, match=r"unknown training option.*stepz"):
        TrainConfig.from_yaml(path)
    path.write_text(yaml.safe_dump({"output_dir": "x", "task": "subtraction"}))
    with pytest.raises(ValueError, match="unknown task 'subtraction'"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tiny_config(tmp_path, batch_size=0).validate()


@pytest.mark.parametrize("text, message", [
    ("steps: many", "training option steps must be int, got 'many'"),
    ("steps: 3.5", "training option steps must be int, got 3.5"),
    ("warmup_steps: -3", "training option warmup_steps must be >= 0, got -3"),
    ("eval_every: -5", "training option eval_every must be >= 0, got -5"),
    ("max_minutes: 0", "training option max_minutes must be > 0, got 0"),
    ("eval_every: 10\neval_sizes: 5", "training option eval_sizes must be list, got 5"),
    ("eval_every: 10\neval_sizes: [5, 0]", "eval_sizes is the number of digits per operand and must be an int >= 1"),
    ("learning_rate: fast", "training option learning_rate must be float, got 'fast'"),
    ("model_type: mamba3", "unknown model_type 'mamba3': hf_toolssm's are tool_mamba and tool_rnn"),
    ("steps: [3", "is not valid YAML"),
    ("- steps: 3", "expected a mapping of training options"),
])
def test_options_of_the_wrong_type_or_range_are_named_before_training(tmp_path, text, message):
    """Not a TypeError deep in the loop (or, for eval_sizes, only at the first in-training check)."""
    path = tmp_path / "bad.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\n{text}\n" if not text.startswith("-") else text)
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.from_yaml(path)


def test_yaml_reads_2e_3_as_a_string_and_a_float_option_takes_it_as_the_number(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text(f"output_dir: {tmp_path}\nlearning_rate: 2e-3\nmodel_kwargs: {{hidden_size: 8}}\n")
    assert TrainConfig.from_yaml(path).learning_rate == 0.002


def test_a_fresh_run_into_a_used_folder_and_a_resume_of_another_config_are_refused(tmp_path, capsys):
    """Either would mix two runs' checkpoints: a later --resume would continue the newest of either."""
    from hf_toolssm.cli import main

    run = tmp_path / "run"
    train(tiny_config(run, steps=3))
    with pytest.raises(TrainingSetupError, match=r"already holds a run \(checkpoint-3\); pass --resume"):
        train(tiny_config(run, steps=3, seed=5))
    another = r"--resume: .* holds a run of another config \(seed: 0 there, 5 now\)"
    with pytest.raises(TrainingSetupError, match=another):
        train(tiny_config(run, steps=3, seed=5), resume=True)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(tiny_config(run, steps=3, seed=5))))
    with pytest.raises(SystemExit, match=r"toolssm train: .*already holds a run"):  # one line, no traceback
        main(["train", "--config", str(path)])
    capsys.readouterr()
    train(tiny_config(run, steps=4, log_every=10), resume=True)  # a longer schedule is the same run
    assert "the run now ends at step 4, not 3" in capsys.readouterr().err
    assert max(logged(run, "loss")) == 4  # the last step is logged though 4 is no multiple of log_every


def test_init_from_a_shipped_model_card_folder(tmp_path):
    """A card's config carries auto_map (its remote code): where the code lives, not what the model is."""
    from hf_toolssm.model_card import export_remote_code
    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import build_model

    card = train(tiny_config(tmp_path / "addition", steps=1))
    export_remote_code(card)
    config = tiny_config(tmp_path / "tuned", init_from=str(card))
    assert build_model(config, build_char_tokenizer()).config.tool_config["init_from"] == str(card)


@pytest.mark.parametrize("model_type", ["tool_mamba", "tool_rnn", "gpt_neox", "mistral"])
def test_a_model_kwargs_typo_is_an_error_not_a_default_sized_model(model_type, tmp_path):
    """transformers' configs keep unknown keywords as attributes: without the check, `hidden_sise` trains the
    default width in silence."""
    typo = r"has no option\(s\) \['hidden_sise'\]; 'hidden_sise': did you mean 'hidden_size'"
    with pytest.raises(ValueError, match=typo):
        tiny_config(tmp_path, model_type=model_type, model_kwargs={"hidden_sise": 8}).validate()


def test_legacy_model_kwargs_that_transformers_converts_are_accepted(tmp_path):
    """GPT-NeoX's rotary_pct is stored as rope_parameters["partial_rotary_factor"], not under its own name."""
    neox = {"rotary_pct": 0.25, "hidden_size": 16, "num_attention_heads": 2}
    tiny_config(tmp_path, model_type="gpt_neox", model_kwargs=neox).validate()


def test_model_kwargs_a_config_rejects_give_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"model_kwargs of gpt_neox: .*not divisible by the number of attention heads"):
        tiny_config(tmp_path, model_type="gpt_neox", model_kwargs={"hidden_size": 16, "num_attention_heads": 3}
                    ).validate()


def test_train_command_errors_name_the_problem_without_a_traceback(tmp_path):
    from hf_toolssm.cli import main

    with pytest.raises(SystemExit, match=r"toolssm train: .*No such file or directory"):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "model_kwargs": {"hidden_sise": 8}}))
    with pytest.raises(SystemExit, match="toolssm train: model_kwargs: ToolMambaConfig has no option"):
        main(["train", "--config", str(path)])


def test_init_from_starts_another_task_from_a_trained_checkpoint(tmp_path):
    """init_from: the weights of a checkpoint of one task start a run of another (one character vocabulary)."""
    from transformers import AutoModelForCausalLM

    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import build_model

    first = train(tiny_config(tmp_path / "addition", steps=3))
    config = tiny_config(tmp_path / "multiplication", task="multiplication", init_from=str(first), steps=3)
    config.validate()
    start, trained = build_model(config, build_char_tokenizer()), AutoModelForCausalLM.from_pretrained(first)
    assert start.state_dict().keys() == trained.state_dict().keys()
    assert all(torch.equal(start.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert start.config.tool_config["task"] == "multiplication"
    final = train(config)
    tool_config = json.loads((final / "config.json").read_text())["tool_config"]
    assert tool_config["task"] == "multiplication" and tool_config["init_from"] == str(first)  # for the card
    assert yaml.safe_load((tmp_path / "multiplication" / "train_config.yaml").read_text())["init_from"] == str(first)

    wider = tiny_config(tmp_path / "wider", init_from=str(first), model_kwargs=dict(TINY, hidden_size=64))
    with pytest.raises(ValueError, match="hidden_size: the config says 64, the checkpoint has 32"):
        build_model(wider, build_char_tokenizer())
    with pytest.raises(ValueError, match=r"'.*nowhere' is not a checkpoint folder"):
        build_model(tiny_config(tmp_path, init_from=str(tmp_path / "nowhere")), build_char_tokenizer())


def test_init_from_a_gpt_neox_whose_kwargs_transformers_moves(tmp_path):
    """GPT-NeoX's rotary_pct is stored as rope_parameters["partial_rotary_factor"]: the check must still match
    a checkpoint trained from the same kwargs, and still catch one trained from others."""
    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import build_model

    neox = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
            "rotary_pct": 1.0}
    first = train(tiny_config(tmp_path / "a", model_type="gpt_neox", model_kwargs=neox, steps=1))
    same = tiny_config(tmp_path / "b", model_type="gpt_neox", model_kwargs=neox, init_from=str(first))
    assert build_model(same, build_char_tokenizer()).config.tool_config["task"] == "addition"
    half = tiny_config(tmp_path / "c", model_type="gpt_neox", model_kwargs=dict(neox, rotary_pct=0.5),
                       init_from=str(first))
    with pytest.raises(ValueError, match=r"rope_parameters: the config says .*0\.5.*, the checkpoint has .*1\.0"):
        build_model(half, build_char_tokenizer())


def test_every_shipped_config_parses():
    for path in sorted((ROOT / "training" / "configs").glob("*.yaml")):
        TrainConfig.from_yaml(path)


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model_type", ["tool_mamba", "gpt_neox"])
def test_the_trainer_route_runs(tmp_path, model_type):
    """At the configs' size for every model type (transformers' GPT-NeoX defaults would give 64 heads of width 1)."""
    trainer = _load_script("trainer_example").main([
        "--output-dir", str(tmp_path), "--steps", "4", "--batch-size", "4", "--model-type", model_type,
        "--num-threads", str(torch.get_num_threads())])  # the suite's own thread count, left as it was
    assert trainer.state.global_step == 4 and trainer.model.num_parameters() < 200_000
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)
    assert (tmp_path / "final" / "model.safetensors").is_file()
    from hf_toolssm.tasks import checkpoint_tool_config, get_task

    recorded = checkpoint_tool_config(tmp_path / "final", json.loads((tmp_path / "final" / "config.json").read_text()))
    assert recorded["train_max_size"] == get_task("addition").default_train_max_size  # the card's "trained up to"


EVERY_MODEL_TYPE = pytest.mark.parametrize(("model_type", "model_kwargs"), [
    ("tool_mamba", TINY),
    ("tool_rnn", {"hidden_size": 16, "num_hidden_layers": 1, "cell_type": "gru"}),
    ("gpt_neox", {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}),
    ("mistral", {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                 "intermediate_size": 32, "sliding_window": 8}),
])


@EVERY_MODEL_TYPE
def test_micro_batches_give_the_whole_batchs_loss_and_gradients(tmp_path, model_type, model_kwargs):
    """micro_batch_tokens changes how a step is computed, not what: same loss, same gradient."""
    from accelerate import Accelerator

    from hf_toolssm.data import micro_batches
    from hf_toolssm.tasks import get_task
    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import accumulate_gradients, batch_for_step, build_model, target_count

    tokenizer = build_char_tokenizer()
    config = tiny_config(tmp_path, model_type=model_type, model_kwargs=model_kwargs, train_max_size=5)
    model = build_model(config, tokenizer)
    batch = batch_for_step(config, get_task("addition"), tokenizer, step=0)
    targets = target_count(batch)
    results = []
    for max_tokens in (None, 60):
        parts = micro_batches(batch, max_tokens)
        model.zero_grad()
        loss = accumulate_gradients(Accelerator(cpu=True), model, parts, targets=targets, world=1)
        results.append((len(parts), loss, {name: p.grad.clone() for name, p in model.named_parameters()}))
    (whole, loss, grads), (cut, cut_loss, cut_grads) = results
    assert whole == 1 and cut > 2
    torch.testing.assert_close(cut_loss, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(cut_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@EVERY_MODEL_TYPE
def test_the_loss_of_a_right_padded_batch_needs_no_attention_mask(tmp_path, model_type, model_kwargs):
    """The trainer calls models without the mask (faster attention); that must not change the loss."""
    from hf_toolssm.tasks import get_task
    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import batch_for_step, build_model, masked_lm_loss_sum

    tokenizer = build_char_tokenizer()
    config = tiny_config(tmp_path, model_type=model_type, model_kwargs=model_kwargs, train_max_size=5)
    model = build_model(config, tokenizer).eval()
    batch = batch_for_step(config, get_task("addition"), tokenizer, step=0)
    assert (batch["attention_mask"] == 0).any()  # the batch is padded: the case that matters
    masked = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    unmasked = model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(masked_lm_loss_sum(unmasked, batch["labels"]),
                               masked_lm_loss_sum(masked, batch["labels"]))


def test_lora_changes_outputs_and_round_trips_as_an_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hf_toolssm.data import collate, encode_instance, training_instances
    from hf_toolssm.tasks import get_task
    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import build_model, masked_lm_loss_sum

    tokenizer = build_char_tokenizer()
    base = build_model(tiny_config(tmp_path), tokenizer)
    base.save_pretrained(tmp_path / "base")
    model = _load_script("lora_example").lora_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), rank=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    stream = training_instances(get_task("addition"), seed=0, max_size=3)
    batch = collate([encode_instance(next(stream), tokenizer) for _ in range(8)], tokenizer.pad_token_id)
    before = model(input_ids=batch["input_ids"]).logits.detach()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        logits = model(input_ids=batch["input_ids"]).logits
        masked_lm_loss_sum(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = model(input_ids=batch["input_ids"]).logits.detach()
    assert (after - before).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    torch.testing.assert_close(reloaded.eval()(input_ids=batch["input_ids"]).logits, after)


@pytest.mark.parametrize("target", ["in_proj", "x_proj", "dt_proj", "out_proj"])
def test_a_lora_adapter_on_each_mixer_projection_acts_on_every_path_and_merges_exactly(target):
    """The mixer reads x_proj's and dt_proj's weights itself on its fast paths (the scan, the fused one-token
    step): a wrapped projection must be called instead, or its adapter would be ignored and still merged."""
    from peft import LoraConfig, get_peft_model
    from transformers import DynamicCache

    from hf_toolssm.tokenization import build_char_tokenizer
    from hf_toolssm.training import build_model

    torch.manual_seed(0)
    base = build_model(tiny_config("unused"), build_char_tokenizer()).eval()
    ids = torch.randint(3, 60, (2, 7))
    plain = base(ids).logits.detach()
    model = get_peft_model(base, LoraConfig(r=2, target_modules=[target], init_lora_weights=False))
    full = model(ids).logits
    assert (full - plain).abs().max() > 1e-5  # the adapter acts (before: exactly 0 for dt_proj)
    full.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(ids.shape[1])]
        torch.testing.assert_close(torch.cat(steps, dim=1), full.detach(), atol=1e-4, rtol=1e-4)  # one token at a time
        merged = model.merge_and_unload()(ids).logits
    torch.testing.assert_close(merged, full.detach(), atol=1e-4, rtol=1e-4)


NEEDS_TORCHRUN = pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed")


def run_torchrun(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun ...``; a hang (say, a collective that one process skipped) fails the test after ``timeout`` and
    kills the workers too: torchrun starts each in a session of its own, where they would wait forever."""
    import psutil  # accelerate's dependency

    torchrun = str(Path(sys.executable).parent / "torchrun")
    process = subprocess.Popen([torchrun, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for worker in [*psutil.Process(process.pid).children(recursive=True), process]:
            worker.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun {' '.join(args)} hung for {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@NEEDS_TORCHRUN
def test_two_processes_follow_the_single_process_loss_trajectory(tmp_path):
    """`torchrun --nproc_per_node 2` really starts 2 gloo processes and trains the same trajectory.

    Five steps with two of warmup reach the cosine decay, where a schedule stepped once per process (as
    accelerate's scheduler wrapper does) would fall behind: the learning rates are compared as well.
    """
    # "micro": two processes, each cutting its share into a micro-batch per row (only the last part's backward
    # synchronises the processes)
    for port, (name, procs, micro_batch_tokens) in enumerate((("one", 1, None), ("two", 2, None), ("micro", 2, 40))):
        config = dict(tiny_config(tmp_path / name).__dict__)
        config.update(steps=5, save_every=5, micro_batch_tokens=micro_batch_tokens)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run_torchrun(["--nproc_per_node", str(procs), "--master_port", str(29501 + port),
                               str(ROOT / "training" / "train.py"), "--config", str(path)])
        assert result.returncode == 0, result.stderr[-3000:]
    one, two, micro = losses(tmp_path / "one"), losses(tmp_path / "two"), losses(tmp_path / "micro")
    assert sorted(one) == sorted(two) == sorted(micro) == [1, 2, 3, 4, 5]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4)
        assert micro[step] == pytest.approx(one[step], rel=1e-4)
    assert logged(tmp_path / "two", "lr") == logged(tmp_path / "one", "lr")
    world = json.loads((tmp_path / "two" / "checkpoint-5" / "trainer_state.json").read_text())
    assert world["num_processes"] == 2


SIGNAL_RANK_ONE = """
import os, signal, sys
from hf_toolssm import training
from hf_toolssm.cli import main

build = training.batch_for_step


def batch_for_step(config, task, tokenizer, step):
    if step == 2 and os.environ["RANK"] == "1":  # a kill that reaches one process only, mid-step
        signal.raise_signal(signal.SIGTERM)
    return build(config, task, tokenizer, step)


if "--resume" not in sys.argv:
    training.batch_for_step = batch_for_step
sys.exit(main(["train", *sys.argv[1:]]))
"""


@NEEDS_TORCHRUN
def test_a_signal_to_one_of_two_processes_stops_both_at_one_saved_step_and_the_resume_matches(tmp_path):
    """The processes agree on the step to stop at (a max-reduce): a checkpoint is collective, so a process that
    stopped alone would leave the other waiting in the save's barrier."""
    script = tmp_path / "signal_rank_one.py"
    script.write_text(SIGNAL_RANK_ONE)
    config = dict(tiny_config(tmp_path / "run", save_every=5).__dict__)  # step 3 is saved only for the signal
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    train(tiny_config(tmp_path / "straight", save_every=5))  # one process: the trajectory of two (the test above)
    launch = ["--nproc_per_node", "2", str(script), "--config", str(path)]
    stopped = run_torchrun(["--master_port", "29511", *launch])
    assert stopped.returncode != 0  # torchrun reports its workers' exit codes
    assert "SIGTERM: saving checkpoint-3 before stopping" in stopped.stderr, stopped.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3"]
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["num_processes"] == 2
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]  # both stopped there: no step 4 was logged
    resumed_run = run_torchrun(["--master_port", "29512", *launch, "--resume"])
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "run")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-4)


def test_checkpoint_tool_config_prefers_the_config_then_the_run_beside_it(tmp_path):
    from transformers import GPTNeoXConfig

    from hf_toolssm.tasks import checkpoint_tool_config

    config = GPTNeoXConfig(hidden_size=16, num_attention_heads=2)  # an older baseline: no tool_config
    (tmp_path / "final").mkdir()
    (tmp_path / "train_config.yaml").write_text(yaml.safe_dump(
        {"task": "multiplication", "task_kwargs": {"k": 2}, "train_max_size": 10, "steps": 3}))
    expected = {"task": "multiplication", "task_kwargs": {"k": 2}, "train_max_size": 10}
    assert checkpoint_tool_config(tmp_path / "final", config) == expected  # the run folder, one up
    assert checkpoint_tool_config(tmp_path, config) == expected  # beside it
    assert checkpoint_tool_config(tmp_path / "final" / "elsewhere", config) == {}
    assert checkpoint_tool_config(tmp_path / "final", {"model_type": "gpt_neox"}) == expected  # a config.json dict
    config.tool_config = {"task": "addition"}
    assert checkpoint_tool_config(tmp_path / "final", config) == {"task": "addition"}


def test_checkpoint_task_builds_the_named_task_or_says_none_is_named():
    from hf_toolssm.tasks import checkpoint_task

    assert checkpoint_task({"task": "multiplication", "task_kwargs": {"k": 2}}).k == 2
    with pytest.raises(ValueError, match=r"the checkpoint names no task .*`toolssm train` records it"):
        checkpoint_task({})


def test_a_transformers_baseline_checkpoint_names_its_task(tmp_path):
    """GPT-NeoX configs have no tool_config field; the checkpoint must still tell `toolssm eval` its task."""
    from transformers import AutoConfig

    neox = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    final = train(tiny_config(tmp_path, model_type="gpt_neox", model_kwargs=neox, steps=1, save_every=1))
    assert AutoConfig.from_pretrained(final).tool_config["task"] == "addition"
