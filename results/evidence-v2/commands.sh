#!/usr/bin/env bash
# The commands behind results/evidence-v2/ (a 2-core CPU). Re-running continues the stored studies in
# results/evidence-v2.db instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/evidence-v2.db
for study in evidence-minilm-rotten-tomatoes; do
    loraplus-sweep run "$study" --storage "$DB"
    name=$(loraplus-sweep studies list --storage "$DB" --names | grep -v '\.confirm' | grep rotten-tomatoes)
    loraplus-sweep confirm "$name" --seeds 10 --storage "$DB" --out results/evidence-v2
done
loraplus-sweep report --storage "$DB" --out results/evidence-v2
