#!/usr/bin/env bash
# The commands behind results/evidence/ (a 2-core CPU, about an hour). Re-running continues the
# stored studies in results/evidence.db and results/transfer.db instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/evidence.db
for task in rotten-tomatoes drug-reviews; do
    loraplus-sweep run "minilm-$task" --storage "$DB"
done
for name in $(loraplus-sweep studies list --storage "$DB" --names); do
    case "$name" in *.confirm) ;; *) loraplus-sweep confirm "$name" --seeds 5 --storage "$DB" ;; esac
done
loraplus-sweep report --storage "$DB" --out results/evidence

# The recommended default lambda on a task none of the studies above used.
DEFAULT=$(python -c "import json; print(json.load(open('results/evidence/default_lambda.json'))[0]['lambda'])")
sed "s/DEFAULT/$DEFAULT/" studies/minilm-bbc-news-transfer.toml > results/evidence/transfer.toml
TDB=sqlite:///results/transfer.db
loraplus-sweep run results/evidence/transfer.toml --storage "$TDB"
for name in $(loraplus-sweep studies list --storage "$TDB" --names); do
    case "$name" in *.confirm) ;; *) loraplus-sweep confirm "$name" --seeds 5 --storage "$TDB" ;; esac
done
loraplus-sweep report --storage "$TDB" --out results/evidence/transfer
