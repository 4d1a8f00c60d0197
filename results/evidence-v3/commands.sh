#!/usr/bin/env bash
# The commands behind results/evidence-v3/ (the CPU cell: MiniLM-L6 on Rotten Tomatoes, five named arms).
# Re-running continues the runs stored in results/evidence-v3.db; nothing under results/evidence-v2* is
# written. `--jobs 2` runs two trials at a time, a core each.
set -euo pipefail
cd "$(dirname "$0")/../.."
python results/evidence-v3/arms.py --jobs 2 | tee results/evidence-v3/arms.txt
# The standard tables and plots of the copied v2 search and of these runs (confirm's rows: the v2 LoRA+
# arm and lambda 16 against plain LoRA at its v2 eta_A, and the v2 arm against plain LoRA at its eta_B).
loraplus-sweep report --storage sqlite:///results/evidence-v3.db --out results/evidence-v3/report
# The v2 database read again by this version's report (its importance among the trials within noise
# of the best, beside all trials); results/evidence-v2/ keeps what the earlier report wrote.
loraplus-sweep report --storage sqlite:///results/evidence-v2.db --format csv --out results/evidence-v3/v2-reread
