#!/usr/bin/env bash
# After commands.sh: the recommended default lambda on a task none of its studies used
# (drug-reviews), in results/transfer.db and results/evidence/transfer/.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Plain LoRA, the paper's 2^4 and the recommended default (which may be either of them).
LAMBDAS=$(python -c "
import json
default = json.load(open('results/evidence/default_lambda.json'))[0]['lambda']
print(sorted({1.0, 16.0, float(default)}))")
sed "s/LAMBDAS/$LAMBDAS/" results/evidence/transfer.template.toml > results/evidence/transfer.toml
TDB=sqlite:///results/transfer.db
loraplus-sweep run results/evidence/transfer.toml --storage "$TDB"
for name in $(loraplus-sweep studies list --storage "$TDB" --names); do
    case "$name" in *.confirm) ;; *) loraplus-sweep confirm "$name" --seeds 5 --storage "$TDB" ;; esac
done
loraplus-sweep report --storage "$TDB" --out results/evidence/transfer
