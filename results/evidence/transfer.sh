#!/usr/bin/env bash
# After commands.sh: the recommended default lambda on a task none of its studies used
# (drug-reviews), in results/transfer.db and results/evidence/transfer/.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFAULT=$(python -c "import json; print(json.load(open('results/evidence/default_lambda.json'))[0]['lambda'])")
sed "s/DEFAULT/$DEFAULT/" results/evidence/transfer.template.toml > results/evidence/transfer.toml
TDB=sqlite:///results/transfer.db
loraplus-sweep run results/evidence/transfer.toml --storage "$TDB"
for name in $(loraplus-sweep studies list --storage "$TDB" --names); do
    case "$name" in *.confirm) ;; *) loraplus-sweep confirm "$name" --seeds 5 --storage "$TDB" ;; esac
done
loraplus-sweep report --storage "$TDB" --out results/evidence/transfer
