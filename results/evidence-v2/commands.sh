#!/usr/bin/env bash
# The commands behind results/evidence-v2/ (the MiniLM-L6 cells on a 2-core CPU, SmolLM2's on a GPU).
# Re-running continues the stored studies in results/evidence-v2.db instead of starting over.
# `--jobs 2` runs two trials at a time, a core each:
# the drug-reviews search, the bbc-news grid and the bbc-news and drug-reviews confirms ran so; the
# rest one at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=sqlite:///results/evidence-v2.db
for task in rotten-tomatoes bbc-news drug-reviews; do
    search=1 confirm=2
    [ "$task" = drug-reviews ] && search=2
    [ "$task" = rotten-tomatoes ] && confirm=1
    # run's summary (standard output) starts with the study's name: "NAME: 24 finished trials ..."
    name=$(loraplus-sweep run "evidence-minilm-$task" --storage "$DB" --jobs "$search" | tee /dev/stderr \
           | sed -n 's/^\([^ :]*\): [0-9]* finished trials.*/\1/p')
    loraplus-sweep confirm "$name" --seeds 10 --storage "$DB" --out results/evidence-v2 --jobs "$confirm"
done
# The full grid over the region the bbc-news sweep searched, at its trial settings (70 points); the
# report's sweep_vs_grid table compares the two.
loraplus-sweep run evidence-minilm-bbc-news-grid --storage "$DB" --jobs 2
# The second model, SmolLM2-135M, on the same three tasks: minutes of a GPU (smollm2-gpu.txt says
# how they ran). On a GPU machine of its own, with the results copied home afterwards:
#   bash results/evidence-v2/smollm2.sh sqlite:///smollm2.db
#   loraplus-sweep studies copy sqlite:///smollm2.db --storage "$DB"
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    bash results/evidence-v2/smollm2.sh "$DB"
    # The same cells with eta_A up to 2e-2, where plain LoRA's best lies for this model.
    CELLS=evidence-smollm2-wide SLOTS="--devices 0,0,0,0" bash results/evidence-v2/smollm2.sh "$DB"
fi
loraplus-sweep report --storage "$DB" --out results/evidence-v2
# Why test numbers trail validation on Rotten Tomatoes (README, Evidence).
python results/evidence-v2/split_gap.py > results/evidence-v2/split-gap.txt
