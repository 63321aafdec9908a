"""eval/make_results_page.py: the page's cells are computed from the JSON files as the page says."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def page(tmp_path, monkeypatch):
    """The page module, reading results from an empty temporary folder."""
    spec = importlib.util.spec_from_file_location("make_results_page", ROOT / "eval" / "make_results_page.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def write_run(folder: Path, experiment: str, model: str, seed: int, rows: dict[int, tuple[float, float]],
              pass_rates: dict[int, float] | None = None) -> None:
    """rows: size -> (answer exact match, trace exact match); pass_rates: size -> pass rate (coding)."""
    results = [
        {"size": size, "samples": 10, "answer_exact_match": answer, "trace_exact_match": trace, "token_accuracy": 1.0,
         "mean_trace_tokens": 100.0, "decode_tokens_per_s": 1000.0, "seconds": 1.0,
         "pass_rate": (pass_rates or {}).get(size)}
        for size, (answer, trace) in rows.items()
    ]
    payload = {"command": f"toolssm eval {model}", "machine": "test", "date": "today", "results": results}
    (folder / experiment).mkdir(parents=True, exist_ok=True)
    (folder / experiment / f"{model}_seed{seed}.json").write_text(json.dumps(payload))


def test_table_cell_is_the_largest_size_at_five_percent_best_and_mean_over_seeds(page, tmp_path):
    write_run(tmp_path, "logical_graph", "tool_mamba", 0, {10: (1.0, 1.0), 100: (0.5, 0.06), 1000: (0.1, 0.04)})
    write_run(tmp_path, "logical_graph", "tool_mamba", 1, {10: (1.0, 1.0), 100: (0.0, 0.0), 1000: (0.0, 0.0)})
    text = page.render()
    assert "best 100, mean 55 over 2 seed(s); per seed: 100 (6%), 10 (100%)" in text
    assert (tmp_path / "logical_graph" / "accuracy.png").exists()
    assert "| GRU | 10→1K (100%) | not run yet | `bash eval/run_experiment.sh logical_graph gru 0` |" in text


def test_the_plot_gives_each_model_a_colour_and_each_seed_a_line_style(page, tmp_path, monkeypatch):
    import matplotlib.figure

    figures, save = [], matplotlib.figure.Figure.savefig

    def keep_figure(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_figure)
    for seed in (0, 1):
        write_run(tmp_path, "logical_graph", "tool_mamba", seed, {10: (1.0, 1.0), 100: (1.0, 1.0)})
    write_run(tmp_path, "logical_graph", "lstm", 0, {10: (1.0, 1.0), 100: (0.0, 0.0)})
    page.render()
    (figure,) = figures
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    mamba_0, mamba_1, lstm = lines["Mamba (seed 0)"], lines["Mamba (seed 1)"], lines["LSTM (seed 0)"]
    assert mamba_0.get_color() == mamba_1.get_color() != lstm.get_color()
    assert mamba_0.get_linestyle() != mamba_1.get_linestyle() and mamba_0.get_marker() != mamba_1.get_marker()


def test_an_interrupted_evaluations_partial_file_is_not_a_result(page, tmp_path):
    """`toolssm eval --out X.json` keeps finished sizes in X.partial.json until it completes: not on the page."""
    write_run(tmp_path, "logical_graph", "tool_mamba", 0, {10: (1.0, 1.0), 100: (0.5, 0.06)})
    partial = tmp_path / "logical_graph" / "tool_mamba_seed0_1000.partial.json"
    partial.write_text((tmp_path / "logical_graph" / "tool_mamba_seed0.json").read_text())
    text = page.render()
    assert "partial" not in text and "over 1 seed(s); per seed: 100 (6%)" in text


@pytest.mark.parametrize("content", ['{"results": [{"size": 10', '{"command": "toolssm eval"}', '{"results": [{}]}'])
def test_a_damaged_results_file_is_named(page, tmp_path, content):
    write_run(tmp_path, "logical_graph", "tool_mamba", 0, {10: (1.0, 1.0)})
    (tmp_path / "logical_graph" / "tool_mamba_seed1.json").write_text(content)
    with pytest.raises(SystemExit, match=r"tool_mamba_seed1.json is not a `toolssm eval` results file"):
        page.render()


def test_coding_cell_is_the_pass_rate_inside_and_beyond_the_training_sizes(page, tmp_path):
    # The pass rate (the files the decode left), not trace exact match (a model may fix the code along another
    # path) nor the answer (a model may fix the code and miscopy the status line's hash).
    sizes = (4, 16, 20, 30)
    write_run(tmp_path, "coding_interactive", "tool_mamba", 0, dict.fromkeys(sizes, (0.0, 0.0)),
              pass_rates=dict(zip(sizes, (1.0, 0.5, 0.3, 0.1))))
    text = page.render()
    assert "75% up to 16, 20% beyond (mean over sizes and 1 seed(s))" in text
    assert "pass rate by size" in text
    assert "| 0 | 1.00 (10) | 0.50 (10) | 0.30 (10) | 0.10 (10) |" in text
    # the answer check, beside it
    assert ("Answer exact match by size:\n\n| seed | 4 | 16 | 20 | 30 |\n|---|---|---|---|---|\n"
            "| 0 | 0.00 (10) |") in text
    # one Fig. 1 section, as the paper's: the two agents x the two architectures it compares (each also
    # started from another task's model), not the RNN baselines
    section = text.split("## Fig. 1: coding")[1].split("\n## ")[0]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ") and "agent |" in line]
    started, neox = "| Mamba started from the logical-graph Mamba", "| Pythia (GPT-NeoX, RoPE)"
    models = ("| Mamba", started, neox, f"{neox} started from the logical-graph GPT-NeoX")
    wide = f"{neox}, 2 x 128, started from the logical-graph one"  # planned for the interactive agent only
    assert rows == [f"{m}, interactive agent" for m in (*models, wide)] + [f"{m}, single-turn agent" for m in models]
    assert "![coding](coding/accuracy.png)" in section and (tmp_path / "coding" / "accuracy.png").exists()


def test_ablations_share_one_table_labelled_by_variant_and_one_plot(page, tmp_path):
    write_run(tmp_path, "addition_no_cot", "tool_mamba", 0, {5: (1.0, 1.0), 10: (0.0, 0.0)})
    write_run(tmp_path, "addition_calculator", "tool_mamba", 0, {5: (1.0, 1.0), 10: (0.2, 0.2)})
    text = page.render()
    section = text.split("## Ablations")[1].split("\n## ")[0]
    assert "| no chain of thought | 100% at 5 digits, little to no length generalization | best 5, mean 5" in section
    assert "| single-turn calculator call |" in section
    assert "best 10, mean 10 over 1 seed(s); per seed: 10 (20%)" in section
    assert "| the same trace without the tool (plain CoT) | poor even at 5 digits | not run yet |" in section
    assert "![ablations](ablations/accuracy.png)" in section
    assert (tmp_path / "ablations" / "accuracy.png").exists()


def test_best_and_mean_use_the_sizes_every_seed_was_tested_at(page, tmp_path):
    write_run(tmp_path, "addition", "tool_mamba", 0, {5: (1.0, 1.0), 1000: (1.0, 1.0), 10000: (1.0, 1.0)})
    write_run(tmp_path, "addition", "tool_mamba", 1, {5: (1.0, 1.0), 1000: (1.0, 1.0)})
    text = page.render()
    assert ("best 1000, mean 1000 over 2 seed(s) on the sizes all were tested at; per seed: 10000 (100%), "
            "1000 (100%)") in text


def test_the_largest_size_does_not_depend_on_the_order_sizes_were_tested_in(page):
    rows = [{"size": 1000, "trace_exact_match": 0.5}, {"size": 10, "trace_exact_match": 1.0},
            {"size": 100, "trace_exact_match": 0.01}]
    assert page.largest_size_at({"results": rows}, "trace_exact_match") == (1000, 0.5)


def test_every_command_the_page_and_the_queue_name_has_a_config():
    """`bash eval/run_experiment.sh EXPERIMENT MODEL SEED` trains training/configs/EXPERIMENT_MODEL.yaml."""
    page_text = (ROOT / "eval" / "results" / "README.md").read_text()
    commands = set(re.findall(r"bash eval/run_experiment\.sh (\w+) (\w+) \d+", page_text))
    for line in (ROOT / "eval" / "queue.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            experiment, model, _seed = line.split()
            commands.add((experiment, model))
    assert len(commands) > 40
    missing = sorted(f"{e}_{m}.yaml" for e, m in commands
                     if not (ROOT / "training" / "configs" / f"{e}_{m}.yaml").is_file())
    assert not missing, f"commands without a config: {missing}"


def test_mixture_cell_shows_its_auxiliary_addition_under_the_curves(page, tmp_path):
    """The mixture models are also scored on the auxiliary task (the paper's Fig. 9); those files sit in a
    subfolder and must neither join the multiplication curves nor be lost."""
    write_run(tmp_path, "mixture_w033", "tool_mamba", 0, {20: (1.0, 1.0), 500: (0.2, 0.2)})
    write_run(tmp_path / "mixture_w033", "auxiliary_addition", "tool_mamba", 0, {20: (1.0, 0.9), 200: (0.5, 0.4)})
    text = page.render()
    paper = "helps (some weights reach much larger n)"
    assert f"| w = 0.33 | {paper} | best 500, mean 500 over 1 seed(s); per seed: 500 (20%) |" in text
    assert "On the auxiliary task, n+n addition (trained on n <= 20), trace exact match by size" in text
    assert "| seed | 20 | 200 |\n|---|---|---|\n| 0 | 0.90 (10) | 0.40 (10) |" in text
    assert "| seed | 20 | 500 |" in text  # the multiplication curve keeps its own sizes
