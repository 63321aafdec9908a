#!/usr/bin/env bash
# Run experiments one after another (one training or evaluation at a time: the CPU has 2 cores).
# Each line of the queue is "EXPERIMENT MODEL SEED"; finished ones are skipped, interrupted ones resume.
#
#   bash eval/run_queue.sh eval/queue.txt
set -uo pipefail
queue="$(realpath "${1:-$(dirname "$0")/queue.txt}")"  # resolved before the cd: a path relative to the caller
cd "$(dirname "$0")/.."
while read -r experiment model seed; do
  [ -z "${experiment:-}" ] || [ "${experiment:0:1}" = "#" ] && continue
  if [ -f "eval/results/${experiment}/${model}_seed${seed}.json" ]; then
    echo "== done already: $experiment $model $seed"; continue
  fi
  echo "== $(date -u +%FT%TZ) start: $experiment $model $seed"
  # stdin from /dev/null: nothing the experiment runs may read the rest of the queue
  bash eval/run_experiment.sh "$experiment" "$model" "$seed" < /dev/null || echo "== FAILED: $experiment $model $seed"
done < "$queue"
