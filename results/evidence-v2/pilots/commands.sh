#!/usr/bin/env bash
# Single-configuration pilots that sized two evidence cells, and a probe of one (README, Evidence).
# The pilots ran in-process on one thread (OMP_NUM_THREADS=1) while other work shared the 2-core
# machine, so their times are upper bounds. The printed summaries give each one's accuracy.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DB=sqlite:///results/evidence-v2/pilots/pilots.db
for pilot in drug-reviews-five-passes smollm2-rotten-tomatoes; do
    OMP_NUM_THREADS=1 loraplus-sweep run "results/evidence-v2/pilots/$pilot.toml" --in-process --storage "$DB"
done
# After the SmolLM2 cell: plain LoRA above its eta_A range, and its top baseline again (README,
# Evidence); two trials at a time, a core each, nothing else running.
loraplus-sweep run results/evidence-v2/pilots/smollm2-rotten-tomatoes-plain-range.toml --jobs 2 --storage "$DB"
