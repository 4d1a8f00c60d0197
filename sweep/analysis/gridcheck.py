"""A sampled sweep against a full grid over the same region: did the sweep find the grid's best
region, and at what share of the grid's compute? For every (model, task) that holds a grid
study and a sampled one (TPE, random, QMC) of the same trials: the same fixed trial settings
and data (stored.settings_hash), whatever their search spaces.

The grid's best region is every grid point whose value trails the grid's best by at most
report.NOISE_SES standard errors of the difference (see report.diff_se): the
points the grid itself cannot order. The sweep found it when the grid point nearest its best trial
(eta_A and lambda snapped to the grid's values on a log scale, its rank) lies in the region, and
reached the grid's best when its best trial's value is within noise of the grid's best value.
Compute is counted in training tokens (see _cost_column).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep.analysis import report
from sweep.core.metrics import sign

COLUMNS = [
    "model", "task", "settings", "grid_study", "sweep_study", "metric_name", "grid_points", "grid_best",
    "grid_se", "grid_eta_a", "grid_lambda", "grid_rank", "region_points", "region", "sweep_trials",
    "sweep_best", "sweep_eta_a", "sweep_lambda", "sweep_rank", "nearest_grid_point", "sweep_best_in_region",
    "sweep_within_noise", "trials_to_noise", "compute_to_noise", "sweep_over_grid", "compute_unit",
]


def sweep_vs_grid(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, trial settings) with a grid study and a sampled one (see the module)."""
    if "sampler" not in df or "settings" not in df:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for (model, task, settings), g in df.dropna(subset=["settings"]).groupby(["model", "task", "settings"]):
        is_grid = g["sampler"].eq("grid")
        if report.completed(g[is_grid]).empty or report.completed(g[~is_grid]).empty:
            continue
        key = {"model": model, "task": task, "settings": settings,
               "grid_study": ", ".join(sorted(g.loc[is_grid, "study"].unique())),
               "sweep_study": ", ".join(sorted(g.loc[~is_grid, "study"].unique()))}
        rows.append({**key, **_compare(g[is_grid], g[~is_grid])})
    return pd.DataFrame(rows, columns=COLUMNS)


def _compare(grid_all: pd.DataFrame, sweep_all: pd.DataFrame) -> dict:
    grid, sweep = report.completed(grid_all), report.completed(sweep_all)
    metric = str(grid["metric_name"].iloc[0])
    s = sign(metric)
    best = grid.loc[(grid["value"].astype(float) * s).idxmax()]
    se = _se(metric, best)
    seed_var = report.seed_noise(pd.concat([grid, sweep]))[0]

    def within_noise(rows: pd.DataFrame) -> np.ndarray:
        """Whether each row's value trails the grid's best by at most NOISE_SES SEs of the difference
        (report.diff_se: paired over the examples both were scored on, with seed noise where the two
        studies hold replicates; an unknown SE counts as 0, so with both unknown only equal values)."""
        def noise(r: pd.Series) -> float:
            d = report.diff_se(r, best, seed_var)
            return d if math.isfinite(d) else math.hypot(se, _se(metric, r))

        return np.array([(best["value"] - r["value"]) * s <= report.NOISE_SES * noise(r)
                         for _, r in rows.iterrows()], dtype=bool)

    region = grid[within_noise(grid)]
    top = sweep.loc[(sweep["value"].astype(float) * s).idxmax()]
    nearest = _nearest(grid, top)
    reached = sweep[within_noise(sweep)]
    ordered = sweep_all.sort_values("number")
    first = int(reached["number"].min()) if len(reached) else None
    cost = _cost_column(grid_all, sweep_all)
    grid_cost = float(grid_all[cost].sum())
    spent = math.nan if first is None else float(ordered.loc[ordered["number"] <= first, cost].sum())

    def share(amount: float) -> float:
        return amount / grid_cost if grid_cost > 0 else math.nan

    return {
        "metric_name": metric, "grid_points": len(grid_all), "grid_best": float(best["value"]), "grid_se": se,
        "grid_eta_a": float(best["eta_a"]), "grid_lambda": float(best["lambda"]),
        "grid_rank": int(best["rank"]),
        "region_points": len(region), "region": "; ".join(_point(r) for _, r in region.iterrows()),
        "sweep_trials": len(sweep_all), "sweep_best": float(top["value"]),
        "sweep_eta_a": float(top["eta_a"]), "sweep_lambda": float(top["lambda"]),
        "sweep_rank": int(top["rank"]),
        "nearest_grid_point": _point(nearest),
        "sweep_best_in_region": _key(nearest) in {_key(r) for _, r in region.iterrows()},
        "sweep_within_noise": bool(len(reached)),
        "trials_to_noise": None if first is None else int((ordered["number"] <= first).sum()),
        "compute_to_noise": share(spent), "sweep_over_grid": share(float(sweep_all[cost].sum())),
        "compute_unit": cost,
    }


def _cost_column(*frames: pd.DataFrame) -> str:
    """Compute in training tokens, which neither the machine's load nor its threads per trial move
    (the grid may run two trials at a time where the sweep ran one); a failed or unfinished trial
    counts the tokens it recorded. Wall time where a finished trial has no token count."""
    def counted(f: pd.DataFrame) -> bool:
        finished = f[f["state"].isin(["COMPLETE", "PRUNED"])]
        return "tokens" in f and bool((pd.to_numeric(finished["tokens"]).fillna(0) > 0).all())

    has_tokens = all(counted(f) for f in frames)
    return "tokens" if has_tokens else "wall_time_s"


def _se(metric: str, row: pd.Series) -> float:
    se = report.standard_error(metric, float(row["value"]), row.get("config"), row.get("metric_se"))[0]
    return 0.0 if math.isnan(se) else se  # unknown: only equal values are within noise


def _nearest(grid: pd.DataFrame, trial: pd.Series) -> pd.Series:
    """The grid point nearest the trial, at its rank where the grid has it: distance on log eta_A and
    log lambda, each in steps of the grid's own spacing along that axis."""
    ranks = grid[grid["rank"] == trial["rank"]]
    grid = ranks if len(ranks) else grid
    distance = np.zeros(len(grid))
    for column in ("eta_a", "lambda"):
        values = np.log(grid[column].astype(float).to_numpy())
        steps = np.diff(np.unique(values))
        step = float(np.median(steps)) if len(steps) else 1.0
        distance += ((values - math.log(float(trial[column]))) / step) ** 2
    return grid.iloc[int(distance.argmin())]


def _key(row: pd.Series) -> tuple[float, float, int]:
    return round(float(row["eta_a"]), 12), round(float(row["lambda"]), 9), int(row["rank"])


def _point(row: pd.Series) -> str:
    return f"eta_A {float(row['eta_a']):.2g}, lambda {float(row['lambda']):.3g}, rank {int(row['rank'])}"
