#!/usr/bin/env bash
# Single-configuration pilots that sized two evidence cells (README, Evidence). Each ran in-process on
# one thread (OMP_NUM_THREADS=1) while other work shared the 2-core machine, so their times are upper
# bounds. The printed summary gives each pilot's accuracy.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DB=sqlite:///results/evidence-v2/pilots/pilots.db
for pilot in drug-reviews-five-passes smollm2-rotten-tomatoes; do
    OMP_NUM_THREADS=1 loraplus-sweep run "results/evidence-v2/pilots/$pilot.toml" --in-process --storage "$DB"
done
