"""Evidence v3, the CPU cell: MiniLM-L6 on Rotten Tomatoes, five named arms over 15 fresh seeds.

evidence-v2's one significant gain (+1.49 points) paired the LoRA+ arm (eta_B 2.3e-3) with plain LoRA at
eta_A 6.8e-4, the low edge of plain LoRA's plateau: two eta_B 3.4x apart. These arms separate lambda from
eta_B. Each runs as a trial of one confirm study of the v2 search (its spec, its head_lr, fp32 pinned),
at seeds no earlier run used (v2's search ran seed 0, its confirm seeds 1-10; these are 11-25), scored on
the whole test split, every arm on the same seeds, so each contrast below is paired by seed. The p-values
are Holm-corrected over the family of contrasts.

    python results/evidence-v3/arms.py [--jobs N]   # continues where it stopped; prints the table

It writes results/evidence-v3.db (a copy of the v2 search, then the runs) and contrasts.{md,csv,json}
here; it never touches results/evidence-v2*.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
V2, V3 = f"sqlite:///{ROOT / 'results/evidence-v2.db'}", f"sqlite:///{ROOT / 'results/evidence-v3.db'}"
SEARCH = "minilm-l6-rotten-tomatoes-b2974e2d"
NAME = SEARCH + ".confirm-v3"
SEEDS = tuple(range(11, 26))
RANK = 8
PLUS_ETA_A, PLUS_LAMBDA = 0.0004653653860628931, 4.99533739407141  # v2's confirmed arm (trial 21)
ETA_B = PLUS_ETA_A * PLUS_LAMBDA  # 2.32e-3
# name: (eta_A, lambda, where it comes from)
ARMS = {
    "lora": (0.000681, 1.0, "plain LoRA's tuned eta_A in v2 (trial 2), the low edge of its plateau"),
    "lora+ bin 2": (PLUS_ETA_A, PLUS_LAMBDA, "v2's confirmed LoRA+ arm (trial 21)"),
    "lora+ bin 4": (ETA_B / 16, 16.0, "lambda 16 at the confirmed arm's eta_B"),
    "lora at eta_B": (ETA_B, 1.0, "plain LoRA at the confirmed arm's eta_B"),
    "lora 3.16e-3": (0.00316, 1.0, "plain LoRA's high plateau point in v2 (trial 4)"),
}
# (better, worse side, what the contrast isolates): each is arm minus arm, paired by seed.
CONTRASTS = (
    ("lora+ bin 2", "lora", "v2's contrast on fresh seeds: lambda and eta_B both differ"),
    ("lora+ bin 2", "lora at eta_B", "lambda 5 vs 1 at the same eta_B"),
    ("lora+ bin 4", "lora at eta_B", "lambda 16 vs 1 at the same eta_B"),
    ("lora+ bin 4", "lora+ bin 2", "lambda 16 vs 5 at the same eta_B"),
    ("lora+ bin 2", "lora 3.16e-3", "LoRA+ vs plain LoRA's high plateau point"),
    ("lora 3.16e-3", "lora", "plain LoRA: the plateau's two v2 points"),
)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def run(jobs: int) -> None:
    from sweep.console import ui
    from sweep.core.quiet import quiet_libraries
    from sweep.engine.checks import preflight
    from sweep.study.confirm import Arm, Plan
    from sweep.study.stored import StoredStudy, copy_studies
    from sweep.study.workers import slots_starting

    if not (ROOT / "results/evidence-v3.db").exists() or StoredStudy.find(V3, SEARCH) is None:
        copy_studies(V2, V3, [SEARCH])
    study = StoredStudy.load(V3, SEARCH)
    spec = study.joined_spec({"jobs": jobs})
    spec = spec.replace(base=spec.base.replace(precision="fp32"))  # the same arithmetic on any machine
    arms = {n: Arm(n, eta_a, lam, RANK, source) for n, (eta_a, lam, source) in ARMS.items()}
    plus = tuple(arms[n] for n in ("lora+ bin 2", "lora+ bin 4", "lora 3.16e-3"))
    plan = Plan(NAME, arms["lora"], plus, "lora+ bin 2", SEEDS, None, arms, "test", None,
                arms["lora at eta_B"])
    with slots_starting(spec):
        quiet_libraries()
        spec = preflight(spec, "test")
    ui.confirm_live(study, spec, plan)


def contrasts() -> pd.DataFrame:
    from sweep.core import stats
    from sweep.study.confirm import arm_runs
    from sweep.study.stored import StoredStudy

    trials = StoredStudy.load(V3, NAME).frame()
    runs = {n: arm_runs(trials, n) for n in ARMS}
    rows = []
    for a, b, what in CONTRASTS:
        seeds = sorted(set(runs[a].values) & set(runs[b].values))
        if len(seeds) < 2:
            continue
        p = stats.paired([runs[a].values[s] for s in seeds], [runs[b].values[s] for s in seeds])
        rows.append({"contrast": f"{a} - {b}", "isolates": what, "seeds": len(seeds),
                     "eta_B": f"{ARMS[a][0] * ARMS[a][1]:.3g} vs {ARMS[b][0] * ARMS[b][1]:.3g}",
                     "mean a": p.mean_plus, "mean b": p.mean_plain, "gain": p.diff_mean,
                     "sd of pairs": p.diff_std, "ci95 low": p.ci_low, "ci95 high": p.ci_high,
                     "p": p.p_value, "mde80": p.mde})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p holm"] = holm(frame["p"].tolist())
        frame["holds (holm 5 %)"] = frame["p holm"] < 0.05
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="trials at a time (a core each)")
    parser.add_argument("--table-only", action="store_true", help="only print the stored runs' table")
    args = parser.parse_args()
    if not args.table_only:
        run(args.jobs)
    from sweep.analysis.report import to_format

    frame = contrasts()
    arms = pd.DataFrame([{"arm": n, "eta_A": e, "lambda": lam, "eta_B": e * lam, "from": src}
                         for n, (e, lam, src) in ARMS.items()])
    text = to_format(arms, "markdown") + "\n\n" + to_format(frame, "markdown") + "\n"
    print(text)
    frame.to_csv(HERE / "contrasts.csv", index=False)
    (HERE / "contrasts.md").write_text(text)
    (HERE / "contrasts.json").write_text(json.dumps({"arms": arms.to_dict("records"),
                                                     "contrasts": frame.to_dict("records")}, indent=1))

if __name__ == "__main__":
    sys.exit(main())
