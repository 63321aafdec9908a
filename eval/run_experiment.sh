#!/usr/bin/env bash
# Train one model for one experiment and evaluate its length generalization; results land in
# eval/results/EXPERIMENT/MODEL_seedSEED.json and the results page is regenerated.
#
#   bash eval/run_experiment.sh addition tool_mamba 0
#   bash eval/run_experiment.sh --train-only addition tool_mamba 0   # or --eval-only: one half (run_queue.sh --overlap)
#
# Training resumes if interrupted (re-run the same command); a missing init_from run is trained first.
# Env: SAMPLES (default 100; 50 for coding), SIZES (override).
# Hanoi also gets a second grid at 11 and 12 disks, 20 samples a size (MODEL_seedSEED_11_12.json), unless SIZES is
# set or the main grid's largest size scored 0. Attention models (GPT-NeoX, Mistral) attend over a KV cache as long as
# the trace: their grid stops at size 100, without the second one.
set -euo pipefail
# The whole script is functions, called on its last line, so that bash parses it before running: editing this
# file while a queue runs it cannot break the run in progress.
usage() {  # this file's header comment
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

main() {
  local phase=all
  case "${1:-}" in
    --train-only) phase=train; shift ;;
    --eval-only)  phase=eval; shift ;;
    -h|--help)    usage; return 0 ;;
  esac
  if [ $# -lt 2 ]; then usage >&2; return 2; fi
  default_samples=100
  long_sizes=""  # a second grid, 20 samples a size: traces too long for 100 in a session
  local experiment=$1 model=$2 seed=${3:-0}
  cd "$(dirname "$0")/.."
  [ -f .venv/bin/activate ] && . .venv/bin/activate  # the README's install location
  toolssm() { python -m hf_toolssm.cli "$@"; }
  config=training/configs/${experiment}_${model}.yaml
  run=runs/${experiment}_${model}_seed${seed}
  out=eval/results/${experiment}/${model}_seed${seed}.json
  if [ "$phase" != eval ] && [ ! -f "$config" ]; then
    echo "run_experiment.sh: no config $config; the EXPERIMENT_MODEL pairs there:" >&2
    (cd training/configs && ls -- *.yaml | sed 's/\.yaml$//; s/^/  /') >&2
    return 2
  fi
  if [ "$phase" != eval ]; then train_run "$config" "$run" "$seed"; fi
  if [ "$phase" = train ]; then return; fi
  if [ ! -f "$run/final/config.json" ]; then
    echo "run_experiment.sh: $run/final is not trained yet; train it first (--train-only, or no flag)" >&2; return 1
  fi
  # the evaluation grid
  case "$experiment" in
    addition)          default_sizes=5,10,20,50,100,1000 ;;
    multiplication_k*) default_sizes=10,13,20,50,100,500,1000 ;;
    logical_graph*)    default_sizes=10,20,50,100,500,1000 ;;  # and its trace-layout variants
    hanoi_iterative)   default_sizes=8,9,10; long_sizes=11,12 ;;  # 11 and 12 disks: 0.3M and 0.6M-token traces
    hanoi_recursive)   default_sizes=7,8,9,10; long_sizes=11,12 ;;
    addition_*)        default_sizes=5,10,20,50,100 ;;  # the App. D.7 ablations
    mixture_*)         default_sizes=20,50,100,200,500 ;;  # n x 2 multiplication, trained on n <= 20
    coding_*)          default_sizes=4,8,16,20,24,30; default_samples=50 ;;  # the paper's Fig. 1 axis
    *)                 default_sizes=5,10,20 ;;
  esac
  # attention models attend over a KV cache as long as the trace at every step: stop earlier (the config says
  # which architecture a model is, whatever the experiment calls it)
  model_type=""
  [ -f "$config" ] && model_type=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['model_type'])" \
    "$config")
  case "$model_type" in
    gpt_neox|mistral) default_sizes=$(echo "$default_sizes" | tr ',' '\n' | awk '$1 <= 100' | paste -sd, -)
                      long_sizes="" ;;
  esac
  sizes=${SIZES:-$default_sizes}
  OMP_NUM_THREADS=1 toolssm eval "$run/final" --sizes "$sizes" --samples "${SAMPLES:-$default_samples}" --seed 1234 --out "$out"
  long_out=eval/results/${experiment}/${model}_seed${seed}_${long_sizes//,/_}.json
  # only for a model that still solves some of the main grid's largest size
  if [ -n "$long_sizes" ] && [ -z "${SIZES:-}" ] && [ ! -f "$long_out" ] && python -c \
      "import json, sys; sys.exit(json.load(open('$out'))['results'][-1]['trace_exact_match'] == 0)"; then
    OMP_NUM_THREADS=1 toolssm eval "$run/final" --sizes "$long_sizes" --samples 20 --batch-size 20 --seed 1234 \
      --out "$long_out"
  fi
  case "$experiment" in  # the auxiliary task too (the paper's Fig. 9): n+n addition, trained on n <= 20
    mixture_*) OMP_NUM_THREADS=1 toolssm eval "$run/final" --task addition --sizes 20,50,100,200 \
                 --samples "${SAMPLES:-$default_samples}" --seed 1234 --out "eval/results/${experiment}/auxiliary_addition/${model}_seed${seed}.json" ;;
  esac
  python eval/make_results_page.py
}
# Train RUN from CONFIG with SEED unless it has finished; an interrupted run resumes. A config that starts from
# another run's weights (init_from: runs/NAME_seedS/final) has that run trained first, from
# training/configs/NAME.yaml, when its checkpoint is missing: a fresh machine rebuilds the whole chain.
train_run() {
  local config=$1 run=$2 seed=$3 init_from="" base_name base_seed resume=""
  [ -f "$run/final/config.json" ] && return
  [ -f "$config" ] && init_from=$(python -c \
    "import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get('init_from') or '')" "$config")
  if [ -n "$init_from" ] && [ ! -f "$init_from/config.json" ] && [[ $init_from =~ ^runs/(.+)_seed([0-9]+)/final/?$ ]]; then
    base_name=${BASH_REMATCH[1]} base_seed=${BASH_REMATCH[2]}
    echo "== $config starts from $init_from, which is missing: training it first"
    train_run "training/configs/$base_name.yaml" "runs/${base_name}_seed$base_seed" "$base_seed"
  fi
  [ -d "$run" ] && resume="--resume"
  toolssm train --config "$config" --output-dir "$run" --seed "$seed" $resume
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi  # sourced (as the tests do), it only defines functions
