#!/usr/bin/env bash
# Ship a run trained by eval/run_experiment.sh as a Hub-ready folder model_cards/NAME: its weights and tokenizer,
# training config and loss curve, evaluation results (every grid of eval/results/EXPERIMENT/MODEL_seedSEED*.json,
# merged), the remote code for trust_remote_code=True, and the model card (with model_cards/notes/NAME.md, if there
# is one, after its results).
#
#   bash model_cards/ship_run.sh hanoi_recursive tool_mamba 0 toolmamba-hanoi-recursive
#
# Push it with `hf upload USER/NAME model_cards/NAME .`
set -euo pipefail
main() {
  local experiment=$1 model=$2 seed=$3 name=$4
  cd "$(dirname "$0")/.."
  [ -f .venv/bin/activate ] && . .venv/bin/activate  # the README's install location
  local run=runs/${experiment}_${model}_seed${seed} folder=model_cards/$name
  if [ ! -f "$run/final/config.json" ]; then
    echo "ship_run: $run/final holds no trained model; train and evaluate it first:" \
         "bash eval/run_experiment.sh $experiment $model $seed" >&2
    exit 1
  fi
  local results=(eval/results/$experiment/${model}_seed${seed}.json eval/results/$experiment/${model}_seed${seed}_*.json)
  rm -rf "$folder" && cp -r "$run/final" "$folder" && cp "$run/train_config.yaml" "$run/loss_curve.png" "$folder/"
  python - "$folder" "${results[@]}" <<'PY'
import glob, json, sys
from pathlib import Path

import yaml

from hf_toolssm.model_card import merge_eval_results

folder, patterns = Path(sys.argv[1]), sys.argv[2:]
files = [path for pattern in patterns for path in sorted(glob.glob(pattern))]
if not files:
    sys.exit(f"ship_run: no evaluation of this run in {patterns[0]}; run eval/run_experiment.sh first")
(folder / "eval_results.json").write_text(json.dumps(merge_eval_results(files), indent=2) + "\n")
# Runs trained before checkpoints recorded init_from: take it from the run's own config, for the card.
config = json.loads((folder / "config.json").read_text())
init_from = yaml.safe_load((folder / "train_config.yaml").read_text()).get("init_from")
if init_from and "init_from" not in config.get("tool_config", {}):
    config["tool_config"]["init_from"] = init_from
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
PY
  python -c "from hf_toolssm.model_card import export_remote_code; export_remote_code('$folder')"
  local notes=()  # what the card's own numbers do not show (other seeds), kept beside the folders
  if [ -f "model_cards/notes/$name.md" ]; then notes=(--notes "$(cat "model_cards/notes/$name.md")"); fi
  python -m hf_toolssm.cli card "$folder" --eval-results "$folder/eval_results.json" "${notes[@]}" \
    --reproduce "bash eval/run_experiment.sh $experiment $model $seed   # trains (resumable) and evaluates; then bash model_cards/ship_run.sh $experiment $model $seed $name"
}
main "$@"
