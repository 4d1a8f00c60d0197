#!/usr/bin/env bash
# The SmolLM2-135M cells of results/evidence-v2, on one GPU: the three searches at once, each with
# two trial processes sharing the card (a 135M model's small kernels leave it idle most of the time),
# each search followed by its confirm over 10 fresh seeds on the test split.
#
# Usage: bash results/evidence-v2/smollm2.sh [STORAGE]   (default sqlite:///results/evidence-v2.db)
# Environment: SLOTS, the trial processes of each cell ("--devices 0,0"; "--jobs 1" on a CPU);
# EXTRA, more options for `run` (a dry run: "--n-trials 3 --train-limit 64 --eval-limit 64");
# SEEDS, confirm's seeds (10); CELLS, the studies' name up to the task ("evidence-smollm2"; the cells
# with the wider eta_A range: "evidence-smollm2-wide"); TASKS, the tasks ("rotten-tomatoes bbc-news
# drug-reviews"). Re-running continues the stored studies.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB="${1:-sqlite:///results/evidence-v2.db}"
SLOTS="${SLOTS:---devices 0,0}"
SEEDS="${SEEDS:-10}"
CELLS="${CELLS:-evidence-smollm2}"
TASKS="${TASKS:-rotten-tomatoes bbc-news drug-reviews}"

cell() {
    local task="$1" name
    # run's summary (standard output) starts with the study's name: "NAME: 24 finished trials ..."
    # shellcheck disable=SC2086  # SLOTS and EXTRA are lists of options
    name=$(loraplus-sweep run "$CELLS-$task" --storage "$DB" $SLOTS ${EXTRA:-} \
           | tee /dev/stderr | sed -n 's/^\([^ :]*\): [0-9]* finished trials.*/\1/p')
    # shellcheck disable=SC2086
    loraplus-sweep confirm "$name" --seeds "$SEEDS" --storage "$DB" $SLOTS --out results/evidence-v2
}

pids=()
for task in $TASKS; do
    cell "$task" > >(sed "s/^/[$task] /") 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
