#!/usr/bin/env bash
# Rebuild model_cards/toolmamba-addition from scratch: train (<= 15 min on a 2-core CPU), evaluate, write the card.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf runs/addition_tool_mamba  # from scratch: a fresh run refuses a folder that holds one
python training/train.py --config training/configs/addition_tool_mamba.yaml
rm -rf model_cards/toolmamba-addition && cp -r runs/addition_tool_mamba/final model_cards/toolmamba-addition
cp runs/addition_tool_mamba/loss_curve.png runs/addition_tool_mamba/train_config.yaml model_cards/toolmamba-addition/
OMP_NUM_THREADS=1 toolssm eval model_cards/toolmamba-addition --sizes 5,10,20,50,100,1000 --samples 100 --seed 1234 \
  --out eval/results/addition/tool_mamba_seed0.json
OMP_NUM_THREADS=1 toolssm eval model_cards/toolmamba-addition --sizes 10000 --samples 20 --batch-size 20 --seed 1234 \
  --out eval/results/addition/tool_mamba_seed0_10k.json
python -c "
import json
from hf_toolssm.model_card import merge_eval_results
merged = merge_eval_results(['eval/results/addition/tool_mamba_seed0.json', 'eval/results/addition/tool_mamba_seed0_10k.json'])
json.dump(merged, open('model_cards/toolmamba-addition/eval_results.json', 'w'), indent=2)
"
python -c "from hf_toolssm.model_card import export_remote_code; export_remote_code('model_cards/toolmamba-addition')"
toolssm card model_cards/toolmamba-addition --eval-results model_cards/toolmamba-addition/eval_results.json \
  --notes "$(cat model_cards/notes/toolmamba-addition.md)" \
  --reproduce "python training/train.py --config training/configs/addition_tool_mamba.yaml   # 13.6 min on 2 CPU cores (bash model_cards/build_toolmamba_addition.sh also re-runs the evaluation and this card)"
python eval/make_results_page.py
