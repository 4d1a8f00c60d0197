"""How much of a study's metric each searched setting explains: fANOVA (Hutter et al. 2014, as Optuna
implements it) over the study's completed trials, read from the trials frame (sweep.analysis.report's input).

eta_B = lambda * eta_A, so (eta_A, lambda, rank) and (eta_B, lambda, rank) describe the same trials
twice; one decomposition over all four would split one effect between dependent columns, and its shares
would not add up. Each study is measured once per parameterisation instead: lambda's share where the
other learning rate is eta_A, and where it is eta_B. A share is the fraction of the metric's variance
that one setting explains alone (its main effect); `interactions` is what is left, explained only by
settings together (or not fitted at all).

Nothing here reads or writes storage: the trials go into a study in memory, built for the evaluator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sweep.core.metrics import direction

# fANOVA fits a random forest: fewer completed trials than this give shares that say more about which
# points were drawn than about the metric. Measured on a metric that lambda alone drives (with noise),
# over 12 draws of trials: lambda got 47 % of the variance on average from 4 trials, 67 % from 10 and
# 81 % from 16. Below it, a study's answer says how many trials it has and how many it needs.
MIN_TRIALS = 10
SEED = 0  # the forest's: the same trials give the same shares, report after report
PARAMETERISATIONS = (("eta_a", "lambda", "rank"), ("eta_b", "lambda", "rank"))
LEARNING_RATES = ("eta_a", "eta_b", "lambda")  # searched log-uniform
COLUMNS = ["study", "model", "task", "metric_name", "parameters", "among", "trials", "eta_a", "eta_b",
           "lambda", "rank", "interactions", "answer"]
# The trials a row's shares are measured over: every completed one, where runs that collapsed far below
# the rest can decide the shares alone, or those within noise of the study's best (report.plateau).
ALL, NEAR = "all", "within noise of the best"


def importance_table(df: pd.DataFrame, near: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per study (sorted by name) and parameterisation, each setting's share of the metric's variance,
    over all its trials and, with `near` (trials of the same studies), over those.

    Columns: study, model, task, metric_name, parameters ("eta_a, lambda, rank" or "eta_b, lambda,
    rank"), among (ALL or NEAR), trials (completed, with a finite value), eta_a, eta_b, lambda, rank
    (shares in [0, 1]; NaN for a setting outside the parameterisation, held at one value, or where
    there are too few trials), interactions (1 - the sum of the shares), and answer: the row in one
    sentence, lambda first.
    """
    rows = []
    for study, g in df.groupby("study", sort=True):
        first = g.iloc[0]
        metric = str(first["metric_name"])
        sets = [(ALL, _usable(g))]
        if near is not None:
            sets.append((NEAR, _usable(near[near["study"] == study])))
        for among, done in sets:
            for params in PARAMETERISATIONS:
                shares, interactions, answer = study_shares(done, params, metric,
                                                            "" if among == ALL else f" {among}")
                rows.append({
                    "study": study, "model": first["model"], "task": first["task"], "metric_name": metric,
                    "parameters": ", ".join(params), "among": among, "trials": len(done),
                    **{p: shares.get(p, math.nan) for p in ("eta_a", "eta_b", "lambda", "rank")},
                    "interactions": interactions, "answer": answer,
                })
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["trials"] = out["trials"].astype("int64")
    return out


def _usable(rows: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials with a finite value and every searched setting, eta_b derived, by number."""
    frame = rows.assign(**{c: pd.to_numeric(rows[c], errors="coerce") for c in ("value", "eta_a", "lambda",
                                                                                "rank")})
    frame = frame.assign(eta_b=frame["eta_a"] * frame["lambda"])
    keep = frame["state"].eq("COMPLETE") & np.isfinite(frame["value"]) & frame["rank"].notna()
    for c in LEARNING_RATES:
        keep &= np.isfinite(frame[c]) & (frame[c] > 0)
    return frame[keep].sort_values("number", kind="mergesort")


def study_shares(done: pd.DataFrame, params: tuple[str, ...], metric: str, which: str = ""
                 ) -> tuple[dict[str, float], float, str]:
    """fANOVA shares of `params` over the usable trials `done` (see _usable): (share per setting, NaN
    where it cannot be measured; interactions; the answer in words, its trials called "these N
    trials" + `which`)."""
    n = len(done)
    nan = {p: math.nan for p in params}
    if n < MIN_TRIALS:
        return nan, math.nan, f"not enough trials{which}: {n} completed, fANOVA needs {MIN_TRIALS}"
    varied = [p for p in params if done[p].nunique() > 1]
    if not varied:
        return nan, math.nan, f"not enough trials: {', '.join(params)} each held one value"
    if done["value"].nunique() == 1:
        value = done["value"].iloc[0]
        return nan, math.nan, f"nothing to explain: {metric} was {value:.4g} in all {n} trials"
    measured = _fanova(done, varied, metric)
    shares = {p: measured.get(p, math.nan) for p in params}
    interactions = max(0.0, 1.0 - sum(measured.values()))
    return shares, interactions, _answer(shares, interactions, params, metric, f"{n} trials{which}")


def _fanova(done: pd.DataFrame, params: list[str], metric: str) -> dict[str, float]:
    """Each parameter's main-effect share of the variance (not normalised: they need not sum to 1)."""
    # Here, not at the top: the evaluator loads scikit-learn (seconds), which no other report table needs.
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created in memory
    # fANOVA weighs a range by its length on the scale it is given; the learning rates and lambda are
    # searched log-uniform, so their logs go in (on a linear scale the top decade would outweigh the rest).
    columns = {p: np.log10(done[p].to_numpy(float)) if p in LEARNING_RATES else done[p].to_numpy()
               for p in params}
    dists: dict[str, Any] = {
        p: FloatDistribution(float(v.min()), float(v.max())) if p in LEARNING_RATES
        else CategoricalDistribution(sorted(int(r) for r in set(v)))
        for p, v in columns.items()
    }
    study = optuna.create_study(direction=direction(metric))
    for i, value in enumerate(done["value"].to_numpy(float)):
        point = {p: float(v[i]) if p in LEARNING_RATES else int(v[i]) for p, v in columns.items()}
        study.add_trial(optuna.trial.create_trial(params=point, distributions=dists, value=float(value)))
    found = FanovaImportanceEvaluator(seed=SEED).evaluate(study, params=params)
    return {p: min(max(float(found[p]), 0.0), 1.0) for p in params}


def _percent(share: float) -> str:
    return "one value" if math.isnan(share) else f"{100 * share:.0f} %"


def _answer(shares: dict[str, float], interactions: float, params: tuple[str, ...], metric: str,
            trials: str) -> str:
    """"lambda explains 41 % of the variance of accuracy across these 12 trials (fANOVA over eta_a,
    lambda, rank); eta_a 52 %, rank 7 %, interactions 0 %"."""
    lam = shares.get("lambda", math.nan)
    head = (f"lambda held one value across these {trials}" if math.isnan(lam) else
            f"lambda explains {_percent(lam)} of the variance of {metric} across these {trials}")
    rest = ", ".join(f"{p} {_percent(shares[p])}" for p in params if p != "lambda")
    return f"{head} (fANOVA over {', '.join(params)}); {rest}, interactions {_percent(interactions)}"
