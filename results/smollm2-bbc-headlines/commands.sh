#!/usr/bin/env bash
# The commands behind results/smollm2-bbc-headlines/ (a 2-core CPU, about 40 minutes; trials in fp32).
# Re-running continues the stored study in results/llm.db instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/llm.db
loraplus-sweep run smollm2-bbc-headlines --storage "$DB"
loraplus-sweep report --storage "$DB" --out results/smollm2-bbc-headlines
