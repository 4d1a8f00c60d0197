#!/usr/bin/env bash
# The commands behind results/evidence-v2/ (a 2-core CPU). Re-running continues the stored studies in
# results/evidence-v2.db instead of starting over. `--jobs 2` runs two trials at a time, a core each:
# the drug-reviews search and the bbc-news and drug-reviews confirms ran so; the rest one at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/evidence-v2.db
for task in rotten-tomatoes bbc-news drug-reviews; do
    search=1 confirm=2
    [ "$task" = drug-reviews ] && search=2
    [ "$task" = rotten-tomatoes ] && confirm=1
    loraplus-sweep run "evidence-minilm-$task" --storage "$DB" --jobs "$search"
    name=$(loraplus-sweep studies list --storage "$DB" --names | grep -v '\.confirm' | grep "$task")
    loraplus-sweep confirm "$name" --seeds 10 --storage "$DB" --out results/evidence-v2 --jobs "$confirm"
done
loraplus-sweep report --storage "$DB" --out results/evidence-v2
