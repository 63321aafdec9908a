#!/usr/bin/env bash
# Run the experiments of a queue in order. Each line is "EXPERIMENT MODEL SEED"; finished ones (their JSON
# exists) are skipped, interrupted ones resume.
#
#   bash eval/run_queue.sh eval/queue.txt             # one job at a time
#   bash eval/run_queue.sh --overlap eval/queue.txt   # 2+ cores: a job's evaluation beside the next one's training
#
# Every config trains on one thread and every evaluation decodes on one, so with --overlap a queue takes about
# its training time instead of training plus evaluation. It is still one training and one evaluation at a
# time; the evaluations run in the background, in queue order, logging to runs/logs/. A long evaluation (an
# hour of coding decodes) holds back only the evaluations after it, not the next trainings.
set -uo pipefail
overlap=false
case "${1:-}" in
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --overlap) overlap=true; shift ;;
esac
queue="${1:-$(dirname "$0")/queue.txt}"
if [ ! -f "$queue" ]; then echo "run_queue.sh: no queue file $queue (lines: EXPERIMENT MODEL SEED)" >&2; exit 2; fi
queue="$(realpath -- "$queue")"  # resolved before the cd: a path relative to the caller
cd "$(dirname "$0")/.."
evaluation=""  # the pid of the last evaluation started in the background (it may still be waiting its turn)

# Evaluate a trained job in the background, after the evaluations queued before it.
evaluate_in_background() {
  local before=$evaluation log="runs/logs/eval_$1_$2_seed$3.log"
  mkdir -p runs/logs
  echo "== $(date -u +%FT%TZ) queued for evaluation in the background: $* (log: $log)"
  (
    # one evaluation at a time: the one before is this subshell's sibling, not its child, so poll for its end
    if [ -n "$before" ]; then while kill -0 "$before" 2>/dev/null; do sleep 2; done; fi
    echo "== $(date -u +%FT%TZ) evaluating: $*"
    if bash eval/run_experiment.sh --eval-only "$@" > "$log" 2>&1; then
      echo "== $(date -u +%FT%TZ) evaluated: $*"
    else
      echo "== FAILED evaluation: $* (see $log)"
    fi
  ) < /dev/null &
  evaluation=$!
}

while read -r experiment model seed; do
  [ -z "${experiment:-}" ] || [ "${experiment:0:1}" = "#" ] && continue
  if [ -f "eval/results/${experiment}/${model}_seed${seed}.json" ]; then
    echo "== done already: $experiment $model $seed"; continue
  fi
  echo "== $(date -u +%FT%TZ) start: $experiment $model $seed"
  # stdin from /dev/null: nothing the experiment runs may read the rest of the queue
  if ! $overlap; then
    bash eval/run_experiment.sh "$experiment" "$model" "$seed" < /dev/null || echo "== FAILED: $experiment $model $seed"
  elif bash eval/run_experiment.sh --train-only "$experiment" "$model" "$seed" < /dev/null; then
    evaluate_in_background "$experiment" "$model" "$seed"
  else
    echo "== FAILED training: $experiment $model $seed"
  fi
done < "$queue"
wait  # the evaluations still running or waiting their turn
