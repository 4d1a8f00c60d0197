#!/usr/bin/env bash
# The commands behind results/evidence/ (a 2-core CPU, about 40 minutes). Re-running continues the
# stored studies in results/evidence.db instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/evidence.db
for task in rotten-tomatoes bbc-news; do
    loraplus-sweep run "minilm-$task" --storage "$DB"
done
for name in $(loraplus-sweep studies list --storage "$DB" --names); do
    case "$name" in *.confirm) ;; *) loraplus-sweep confirm "$name" --seeds 5 --storage "$DB" ;; esac
done
loraplus-sweep report --storage "$DB" --out results/evidence
