"""Report aggregation over a sweep's trials: best configs, the gain over plain LoRA, the lambda curve.

Every function takes the trials frame (one row per trial: study, model, task, definition, metric_name,
number, state, value, eta_a, lambda, rank, init, tokens, wall_time_s, and config, the trial's stored
settings; other columns are ignored) and returns a new frame or value; nothing here reads or writes
anything. Which way a value is better follows its metric_name (sweep.core.metrics: higher for accuracy, F1,
MCC, Pearson; lower for a causal LM's loss and perplexity): "best" and "gain" always mean better in the
metric's own direction.

Trials are grouped by (model, task, definition): `definition` is the hash of what a study's trials
measure, its fixed trial settings and data (see _defined), so two studies of one task with other
epochs or data are never pooled, and two that differ only in their search space (a grid and a TPE
sweep of the same trials, another range) are. A frame without the column, or a study stored without
a hash, counts as one definition per (model, task). `setup` labels a definition where its (model,
task) has several.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from sweep.analysis.importance import importance_table
from sweep.core import stats
from sweep.core.metrics import sign
from sweep.core.outfiles import FORMATS
from sweep.core.signals import was_interrupted
from sweep.data import embedded
from sweep.data.config import PLAIN_RTOL

KEYS = ["model", "task", "definition"]
CONFIG_COLUMNS = ["study", "number", "eta_a", "lambda", "rank", "init", "value", "metric_name"]
# "lambda == 1" within this relative tolerance: a 1.0 that went through float round trips is still plain LoRA.
# Output column -> Optuna state name.
STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Trials with state COMPLETE and a finite value (Optuna completes a trial that returned +-inf),
    each replicated one at its mean over seeds (over_seeds)."""
    values = pd.to_numeric(df["value"], errors="coerce")
    return over_seeds(df[df["state"].eq("COMPLETE") & np.isfinite(values)])


def over_seeds(done: pd.DataFrame) -> pd.DataFrame:
    """Completed trials with each replicate (a trial whose replicate_of names another of its study,
    re-trained at the same point on another seed) folded into the trial it replicates: that trial's
    value becomes the mean over its seeds (each seed once), `seeds` their count and `seed_values` the
    values, for seed_noise; a replicate whose trial did not complete is left out. A frame without
    replicates is returned as it is, so this can be applied twice."""
    of = pd.to_numeric(done["replicate_of"], errors="coerce") if "replicate_of" in done else None
    if of is None or of.isna().all():
        return done
    base = done[of.isna()]
    reps = done[of.notna()].assign(_of=of[of.notna()].astype(int), _seed=_seeds(done[of.notna()]))
    reps = reps.drop_duplicates(["study", "_of", "_seed"])
    by: dict[tuple, list[tuple[Any, float]]] = {}
    for study, number, value, seed in zip(reps["study"], reps["_of"], reps["value"], reps["_seed"],
                                          strict=True):
        by.setdefault((study, int(number)), []).append((seed, float(value)))
    values = []
    for study, number, value, seed in zip(base["study"], base["number"], base["value"], _seeds(base),
                                          strict=True):
        more = [v for s, v in by.get((study, int(number)), []) if s != seed]
        values.append([float(value), *more] if more else None)
    means = [float(np.mean(v)) if v else float(x) for v, x in zip(values, base["value"], strict=True)]
    counts = [len(v) if v else 1 for v in values]
    return base.assign(value=means, seeds=counts, seed_values=values)


def _signs(df: pd.DataFrame) -> pd.Series:
    """+1 per row whose metric is better higher, -1 where it is better lower; a row without a metric
    name follows its study's direction where the frame has one (sweep.study.stored's frames do)."""
    fallback = (df["direction"].map(lambda d: -1.0 if d == "minimize" else 1.0) if "direction" in df
                else pd.Series(1.0, index=df.index))
    named = df["metric_name"].map(lambda m: sign(m) if isinstance(m, str) else math.nan).astype(float)
    return named.fillna(fallback).astype(float)


def scores(df: pd.DataFrame) -> pd.Series:
    """Each row's value signed so that higher is better, whatever its metric's direction."""
    return pd.to_numeric(df["value"], errors="coerce") * _signs(df)


def _defined(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with `definition` as text: what its trials measure. The stored settings hash where
    known (sweep.study.stored.settings_hash: every fixed trial setting and the data), so that studies which
    differ only in where they searched pool: a grid beside a TPE sweep of the same trials is one task,
    not two, in the default lambda. Else the study's definition hash (which also holds its search
    space); "" where neither was stored (one definition per task)."""
    definition = (df["definition"].fillna("").astype(str) if "definition" in df
                  else pd.Series("", index=df.index, dtype=object))
    if "settings" in df:
        definition = df["settings"].where(df["settings"].notna(), definition).astype(str)
    return df.assign(definition=definition)


# Drawn per trial: never what tells two definitions apart.
SEARCHED = ("eta_a", "lambda", "rank")
SETUP_SETTINGS = 3  # settings a setup label names at most


def setups(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition), `setup`: how to tell the definition from the others of its (model,
    task). "" where the (model, task) has one definition; else the stored trial settings (the config
    column) in which its definitions differ, such as "epochs=2" against "epochs=1"; "definition HASH"
    where the settings do not tell them apart (another search range, other task data)."""
    df = _defined(df)
    rows = []
    for (model, task), g in df.groupby(["model", "task"], sort=True):
        defs = sorted(g["definition"].unique())
        if len(defs) == 1:
            rows.append((model, task, defs[0], ""))
            continue
        fixed = {d: _fixed_settings(g[g["definition"] == d]) for d in defs}
        shared = set.intersection(*(set(f) for f in fixed.values()))
        differ = sorted(k for k in shared if len({fixed[d][k] for d in defs}) > 1)
        more = ", ..." if len(differ) > SETUP_SETTINGS else ""
        labels = {d: ", ".join(f"{k}={fixed[d][k]}" for k in differ[:SETUP_SETTINGS]) + more for d in defs}
        for d in defs:
            told = labels[d] and list(labels.values()).count(labels[d]) == 1
            rows.append((model, task, d, labels[d] if told else f"definition {d or 'not stored'}"))
    return pd.DataFrame(rows, columns=[*KEYS, "setup"])


def _fixed_settings(rows: pd.DataFrame) -> dict[str, str]:
    """The settings every stored config of these trials shares, as text, the searched ones left out."""
    configs = [c for c in rows["config"] if isinstance(c, dict)] if "config" in rows else []
    if not configs:
        return {}
    texts = [{k: _setting_text(v) for k, v in c.items() if k not in SEARCHED} for c in configs]
    return {k: v for k, v in texts[0].items() if all(t.get(k, None) == v for t in texts)}


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_setting_text(v) for v in value)
    return "none" if value is None else str(value)


def _with_setup(frame: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """`frame` (keyed by KEYS) with the setup column of the trials `df` right after the keys."""
    out = frame.merge(setups(df), on=KEYS, how="left")
    out["setup"] = out["setup"].fillna("")
    at = list(frame.columns).index("definition") + 1
    return out[[*frame.columns[:at], "setup", *frame.columns[at:]]]


def curve_label(task: str, setup: str) -> str:
    """A task's name, with its setup where it has several definitions: "sst2 [epochs=2]"."""
    return f"{task} [{setup}]" if setup else str(task)


def _best_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Ties go to the earlier trial (lower number), then to the study name, so every run picks the same row.
    scored = df.assign(_score=scores(df))
    ordered = scored.sort_values(["_score", "number", "study"], ascending=[False, True, True],
                                 kind="mergesort")
    return ordered.drop_duplicates(keys).sort_values(keys).drop(columns="_score").reset_index(drop=True)


def best_configs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, definition): the best completed trial's study, number, config, value
    and metric."""
    return _best_rows(completed(_defined(df)), KEYS)[KEYS + CONFIG_COLUMNS]


@dataclass(frozen=True)
class Plateau:
    """The configurations within noise of the best among some completed trials, and the one to
    recommend: the trial nearest the middle of the plateau's log eta_B range (eta_B = lambda * eta_A),
    the one farthest from its edges, where a cliff may lie just past the last trial within noise."""

    best: dict[str, Any]  # the best trial (of equal values, the lower number)
    recommended: dict[str, Any]
    trials: int  # within noise of the best, the best included
    eta_b_low: float
    eta_b_high: float
    lambda_bins: tuple[int, ...]  # the bins of the trials within noise, ascending


def plateau(g: pd.DataFrame, within_noise: WithinNoise | None = None) -> Plateau | None:
    """The plateau of the completed trials of `g`, one (model, task, definition) or any part of it
    (None without one): every trial whose value trails the best by at most NOISE_SES standard errors
    of the difference (diff_se, with the seed noise of g's replicates), or not at all. Where an SE is
    unknown only equal values are within noise. Of trials equally near the middle, the better, then
    the lower number. `within_noise`: a WithinNoise that may have found those trials already."""
    within = (within_noise or WithinNoise())(g)
    if not within:
        return None
    best = within[0]
    log_b = [math.log(float(r["eta_a"]) * float(r["lambda"])) for r in within]
    middle = (min(log_b) + max(log_b)) / 2
    # in `within`'s order on a tie: the better, then the lower number
    centre = min(range(len(within)), key=lambda i: (abs(log_b[i] - middle), i))
    clean = [{k: v for k, v in r.items() if k != "_score"} for r in (best, within[centre])]
    return Plateau(clean[0], clean[1], len(within), math.exp(min(log_b)), math.exp(max(log_b)),
                   tuple(sorted({int(lambda_bin(float(r["lambda"]))) for r in within})))


def plateau_trials(g: pd.DataFrame, within_noise: WithinNoise | None = None) -> pd.DataFrame:
    """The completed trials of `g` within noise of their best (see plateau), the best first."""
    within = (within_noise or WithinNoise())(g)
    return pd.DataFrame([{k: v for k, v in r.items() if k != "_score"} for r in within],
                        columns=[c for c in g.columns if c != "_score"] if not within else None)


class WithinNoise:
    """plateau's trials of a frame, found once per set of completed trials: a report's summary (per
    model, task and definition) and its importance rows (per study) mostly ask about the same trials,
    and each finding runs paired bootstraps. One instance serves one frame of trials."""

    def __init__(self) -> None:
        self._found: dict[tuple, list[dict[str, Any]]] = {}

    def __call__(self, g: pd.DataFrame) -> list[dict[str, Any]]:
        done = completed(g)
        key = tuple(sorted(zip(done["study"].astype(str), done["number"].astype(int), strict=True)))
        if key not in self._found:
            self._found[key] = _within_noise(done)
        return self._found[key]


def _within_noise(done: pd.DataFrame) -> list[dict[str, Any]]:
    """plateau's trials of the completed trials `done`, as records with their `_score`, best first, then
    by score and number."""
    if done.empty:
        return []
    scored = done.assign(_score=scores(done))
    rows = scored.sort_values(["_score", "number"], ascending=[False, True], kind="mergesort")
    records = rows.to_dict("records")
    best, seed_var = records[0], seed_noise(done)[0]

    def within_noise(r: dict[str, Any]) -> bool:
        gap = best["_score"] - r["_score"]
        if gap <= 0:
            return True
        # Pairing can at most give (se_a + se_b) (perfectly anti-correlated trials): past that bound a
        # trial is out without its paired bootstrap, which costs seconds on a large split.
        seed = seed_var * (1.0 / _n_seeds(r) + 1.0 / _n_seeds(best)) if math.isfinite(seed_var) else 0.0
        bound = math.sqrt((_trial_se(r) + _trial_se(best)) ** 2 + seed)
        return not gap > NOISE_SES * bound and gap <= NOISE_SES * diff_se(r, best, seed_var)

    return [r for r in records if within_noise(r)]


def recommendations(df: pd.DataFrame, within_noise: WithinNoise | None = None) -> pd.DataFrame:
    """Per (model, task, definition): the plateau within noise of the best and the trial at its centre
    (see plateau). Columns: model, task, definition, recommended_trial, recommended_eta_a,
    recommended_lambda, recommended_rank, recommended_value, plateau_trials, plateau_eta_b_low,
    plateau_eta_b_high (the eta_B range of the trials within noise) and plateau_lambdas (their lambda
    bins as lambdas, "4, 8, 16")."""
    columns = [*KEYS, "recommended_trial", "recommended_eta_a", "recommended_lambda", "recommended_rank",
               "recommended_value", "plateau_trials", "plateau_eta_b_low", "plateau_eta_b_high",
               "plateau_lambdas"]
    rows, within_noise = [], within_noise or WithinNoise()
    for key, g in completed(_defined(df)).groupby(KEYS, sort=True):
        p = plateau(g, within_noise)
        r = p.recommended
        rows.append([*key, r["number"], r["eta_a"], r["lambda"], r["rank"], r["value"], p.trials,
                     p.eta_b_low, p.eta_b_high, ", ".join(f"{2.0**b:g}" for b in p.lambda_bins)])
    return pd.DataFrame(rows, columns=columns)


def is_plain(lam: pd.Series) -> pd.Series:
    """True where lambda is 1 (plain LoRA), within PLAIN_RTOL (sweep.data.config.is_plain for one)."""
    return pd.Series(np.isclose(lam.astype(float), 1.0, rtol=PLAIN_RTOL, atol=0.0), index=lam.index)


def plain_lora_gain(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition): best value with lambda = 1, best value overall, and the gain: how
    much better best is than best_plain in the metric's direction (best - best_plain; for a loss,
    best_plain - best).

    Columns: model, task, definition, metric_name, best, best_lambda, best_plain, plain_eta_a,
    plain_rank (Int64), gain, lora_plus_trials (completed trials with lambda != 1). The plain columns
    and gain are NaN/NA where the task has no completed lambda = 1 trial; gain is NaN too where it has
    no completed LoRA+ trial (plain LoRA against itself is no gain of 0).
    """
    done = completed(_defined(df))
    best = _best_rows(done, KEYS)[KEYS + ["metric_name", "value", "lambda"]]
    best = best.rename(columns={"value": "best", "lambda": "best_lambda"})
    plain = _best_rows(done[is_plain(done["lambda"])], KEYS)[KEYS + ["value", "eta_a", "rank"]]
    plain = plain.rename(columns={"value": "best_plain", "eta_a": "plain_eta_a", "rank": "plain_rank"})
    out = best.merge(plain, on=KEYS, how="left")
    out["plain_rank"] = out["plain_rank"].astype("Int64")
    plus = done[~is_plain(done["lambda"])].groupby(KEYS).size().rename("lora_plus_trials").reset_index()
    out = out.merge(plus, on=KEYS, how="left")
    out["lora_plus_trials"] = out["lora_plus_trials"].fillna(0).astype("int64")
    gain = (out["best"] - out["best_plain"]) * _signs(out) + 0.0  # + 0.0: no "-0" for a tie
    out.insert(out.columns.get_loc("lora_plus_trials"), "gain", gain.where(out["lora_plus_trials"] > 0))
    return out


def lambda_bin(lam: float | pd.Series | np.ndarray) -> int | pd.Series | np.ndarray:
    """Power-of-two bin of lambda, floor(log2(lambda) + 0.5): bin 0 is plain LoRA, bin 4 is lambda = 16.

    Bin k holds [2^(k - 1/2), 2^(k + 1/2)): a lambda exactly at a geometric midpoint goes up (2^2.5 is in
    bin 3), where Python's round() would send half of them down. Scalars give an int, Series a Series.
    """
    values = np.asarray(lam, dtype=float)
    flat = values.ravel()
    bad = flat[~(np.isfinite(flat) & (flat > 0))]
    if bad.size:
        raise ValueError(f"lambda must be finite and > 0; got {bad.tolist()}")
    bins = np.floor(np.log2(values) + 0.5).astype(int)
    if isinstance(lam, pd.Series):
        return pd.Series(bins, index=lam.index, name="lambda_bin")
    return int(bins) if bins.ndim == 0 else bins


# A bin is within noise of the best when it trails it by at most this many standard errors of the
# difference: within one, the data cannot order the two.
NOISE_SES = 1.0


def is_proportion(metric: str) -> bool:
    """Accuracy (of any split): the share of evaluated examples scored right, so its SE is binomial."""
    return metric == "accuracy" or metric.startswith("accuracy_")


def standard_error(metric: Any, value: float, config: Any, stored: Any = None) -> tuple[float, str]:
    """The standard error of one trial's value from its evaluation set, and how it was found.

    Binomial, sqrt(p (1 - p) / n_eval), for accuracy on an embedded task (its split's size is known;
    the config's eval_limit where smaller). Else the trial's own `stored` standard error: a bootstrap
    over the examples it was scored on, which trials record (`metric_se`) whatever the metric and
    split, a causal LM's loss per token included. Else, for a trial stored before that, binomial for
    accuracy on an eval_limit sample (too small where the split was smaller than the limit and scored
    whole). NaN otherwise, with the reason. Not a bootstrap over a bin's trials: those ran at other
    learning rates and ranks, so resampling them measures how far apart the search looked, not how
    noisy the best value is.
    """
    config = config if isinstance(config, dict) else {}
    limit = config.get("eval_limit")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    p = min(max(float(value), 0.0), 1.0) if isinstance(metric, str) and is_proportion(metric) else None
    task = embedded.TASKS.get(config.get("task")) if metric == "accuracy" else None
    if p is not None and task is not None:
        size = task.validation_size  # the test split's size too
        if limit is None or size <= limit:
            return math.sqrt(p * (1.0 - p) / size), f"binomial, n_eval = the whole split {size}"
        return math.sqrt(p * (1.0 - p) / limit), f"binomial, n_eval = eval_limit {limit}"
    recorded = _recorded_se(stored)
    if recorded is not None:
        return recorded, "bootstrap over the evaluated examples"
    if p is None:
        return NAN_F, f"unknown: {metric} is not a proportion"
    if limit is None:
        return NAN_F, "unknown: evaluated on the whole split, whose size is not stored"
    return math.sqrt(p * (1.0 - p) / limit), f"binomial, n_eval = eval_limit {limit}"


def _recorded_se(stored: Any) -> float | None:
    """A trial's stored metric_se, or None where it has none (stored before it existed, or NaN)."""
    try:
        se = float(stored)
    except (TypeError, ValueError):
        return None
    return se if math.isfinite(se) and se >= 0 else None


# A validation split of fewer rows is too small to judge a gain by: accuracy near 0.8 on 100 rows has
# a binomial standard error of 0.04, already as large as the gains a learning-rate ratio brings.
MIN_EVAL_ROWS = 100


def rows_scored(config: Any) -> tuple[int | None, bool]:
    """How many validation rows a trial was scored on, where its config tells: (rows, exact). An
    embedded task's split (or eval_limit where smaller) is exact; another task's eval_limit is an upper
    bound (its split may hold fewer); (None, False) otherwise, as a file's or the Hub's split size is
    not stored with the trials."""
    config = config if isinstance(config, dict) else {}
    limit = config.get("eval_limit")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    task = embedded.TASKS.get(config.get("task")) if isinstance(config.get("task"), str) else None
    if task is not None:
        return min(task.validation_size, limit or task.validation_size), True
    return limit, False


def _trial_se(row: Any) -> float:
    return standard_error(row["metric_name"], row["value"], row.get("config"), row.get("metric_se"))[0]


def _seeds(g: pd.DataFrame) -> pd.Series:
    """Each trial's training seed: its stored seed, else its config's."""
    configs = g["config"] if "config" in g else pd.Series(None, index=g.index, dtype=object)
    from_config = configs.map(lambda c: c.get("seed") if isinstance(c, dict) else None)
    return (g["seed"].where(g["seed"].notna(), from_config) if "seed" in g else from_config)


def seed_noise(g: pd.DataFrame) -> tuple[float, int]:
    """The seed-to-seed variance of one trial's value among the completed trials `g` of one (model,
    task, definition), and its degrees of freedom (0: no replicates, NaN variance). Replicates are
    trials of one configuration (eta_A, lambda, rank) at different seeds; a seed run twice counts
    once. Pooled over configurations (sweep.core.stats.seed_variance): it assumes they all spread alike."""
    if g.empty:
        return NAN_F, 0
    folded = g["seed_values"].map(lambda v: isinstance(v, list)) if "seed_values" in g else None
    if folded is not None and folded.any():  # replicated trials, folded by over_seeds
        rest = seed_noise(g[~folded].drop(columns="seed_values"))
        own = stats.seed_variance(g.loc[folded, "seed_values"].tolist())
        if not rest[1]:
            return own
        return (own[0] * own[1] + rest[0] * rest[1]) / (own[1] + rest[1]), own[1] + rest[1]
    seeds = _seeds(g)
    point = [(round(math.log(float(e)), 6), round(math.log(float(lam)), 6), r)
             for e, lam, r in zip(g["eta_a"], g["lambda"], g["rank"], strict=True)]
    frame = pd.DataFrame({"point": point, "seed": seeds.astype(object).to_numpy(),
                          "value": pd.to_numeric(g["value"], errors="coerce").to_numpy()})
    frame = frame[frame["seed"].notna()].drop_duplicates(["point", "seed"])
    groups = [sub["value"].to_numpy() for _, sub in frame.groupby("point", sort=False) if len(sub) >= 2]
    return stats.seed_variance(groups)


def diff_se(a: Any, b: Any, seed_var: float = math.nan) -> float:
    """The standard error of trial a's value minus trial b's (rows of one definition: one metric, one
    validation split), 0 for a trial against itself.

    Evaluation noise: paired over the examples both were scored on where both stored their per-example
    outcomes (sweep.core.stats.paired_se); else their own standard errors (standard_error) combined as if
    independent, which overstates it where the two agree on most examples. Seed noise: twice the
    study's seed-to-seed variance (seed_noise; each trial's seed independent), where it has
    replicates (seed_var / n for a value that is a mean over n seeds, see over_seeds); without them the
    SE is of evaluation noise only. The two are taken as independent; the evaluation part is the one
    of the trials' first runs, whose outcomes are stored, which overstates a mean over seeds'."""
    same = a.get("number") is not None and a.get("number") == b.get("number")
    if same and a.get("study") == b.get("study"):
        return 0.0
    paired = stats.paired_se(str(a["metric_name"]), a.get("outcomes"), b.get("outcomes"))
    se = paired if paired is not None else stats.unpaired_se(_trial_se(a), _trial_se(b))
    seed = seed_var * (1.0 / _n_seeds(a) + 1.0 / _n_seeds(b)) if math.isfinite(seed_var) else 0.0
    return float(math.sqrt(se * se + seed))


def _n_seeds(row: Any) -> int:
    """The seeds a trial's value is the mean of (over_seeds); 1 for a trial not replicated."""
    n = row.get("seeds")
    return int(n) if isinstance(n, (int, float, np.integer)) and not _missing(n) and n >= 1 else 1


def noise_basis(g: pd.DataFrame) -> str:
    """In words, what diff_se counts for the completed trials `g` of one definition."""
    records = g["outcomes"] if "outcomes" in g else pd.Series(dtype=object)
    paired = bool(len(records)) and records.map(lambda r: isinstance(r, dict)).all()
    evaluation = "evaluation noise, paired over the examples" if paired else "evaluation noise, unpaired"
    _, df = seed_noise(g)
    if df:
        return f"{evaluation}, and seed noise (replicates: {df} degree(s) of freedom)"
    return f"{evaluation} only: no replicates at other seeds, so seed noise is not counted"


def judged(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition): how far its best value and its gain over plain LoRA can be told
    from noise. Columns: model, task, definition, eval_rows (Int64: the validation rows its best trial
    was scored on, NA where not known exactly), eval_rows_at_most (Int64: an upper bound from
    eval_limit, else eval_rows), se (the best trial's standard error, see standard_error), gain_se (the
    standard error of best - best_plain, see diff_se: paired over their shared examples, with the
    seed-to-seed noise of the study's replicates; NaN without both)."""
    done = completed(_defined(df))
    rows = []
    for key, g in done.groupby(KEYS, sort=True):
        top = _best_rows(g, KEYS).iloc[0]
        plain = g[is_plain(g["lambda"])]
        gain_se = (diff_se(top, _best_rows(plain, KEYS).iloc[0], seed_noise(g)[0]) if len(plain)
                   else NAN_F)
        se = _trial_se(top)
        n, exact = rows_scored(top.get("config"))
        rows.append((*key, n if exact else None, n, se, gain_se))
    out = pd.DataFrame(rows, columns=[*KEYS, "eval_rows", "eval_rows_at_most", "se", "gain_se"])
    for c in ("eval_rows", "eval_rows_at_most"):
        out[c] = out[c].astype("Int64")
    return out


def notes(r: dict[str, Any]) -> str:
    """What one summary row cannot tell, in words ("" where nothing): no gain without a LoRA+ trial or
    a plain one, a validation split too small to judge, a gain within noise."""
    said = []
    if _missing(r.get("best")):
        return ""
    if _missing(r.get("best_plain")):
        said.append("no plain LoRA trial (lambda = 1) completed: no gain to report")
    elif not r.get("lora_plus_trials"):
        said.append("no LoRA+ trial (lambda > 1) completed, only plain LoRA: no gain to report; run more "
                    "trials")
    se = "" if _missing(r.get("se")) else f", standard error of {r['metric_name']} ±{r['se']:.4f}"
    rows, at_most = r.get("eval_rows"), r.get("eval_rows_at_most")
    if not _missing(rows) and rows < MIN_EVAL_ROWS:
        said.append(f"validation split of {rows} rows{se}: too small to judge (under {MIN_EVAL_ROWS} rows)")
    elif _missing(rows) and not _missing(at_most) and at_most < MIN_EVAL_ROWS:
        said.append(f"scored on at most {at_most} validation rows (eval_limit){se}: too small to judge "
                    f"(under {MIN_EVAL_ROWS} rows)")
    gain, gain_se = r.get("gain"), r.get("gain_se")
    if not _missing(gain) and not _missing(gain_se) and 0 < gain <= NOISE_SES * gain_se:
        said.append(f"gain {gain:+.4f} within noise (its standard error ±{gain_se:.4f}): the validation "
                    "split cannot tell LoRA+ from plain LoRA")
    if r.get("race"):
        said.append(str(r["race"]))
    return "; ".join(said)


def lambda_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition, lambda bin): the best value over every eta_a and rank, what achieved
    it, and how sure it is.

    Long format, sorted by model, task, definition, lambda_bin; each (model, task, definition) is one
    curve. Columns: model, task, definition, setup, lambda_bin, lambda (= 2^bin), metric_name, value,
    se and se_basis (the best trial's standard error and how it was found: see standard_error), eta_a,
    trial_lambda and rank of the best trial (bin 0 holds lambda up to 1.41, so trial_lambda says whether
    its best was plain LoRA), trials (completed trials in the bin); normalised: 1 at the curve's best
    bin, less elsewhere (value / the best, or for a metric better lower, the best / value), NaN when a
    ratio says nothing (a best <= 0, e.g. an MCC that never left 0; a loss <= 0); normalised_se, the se
    on that scale; diff_se, the standard error of the bin's best minus the curve's best (diff_se:
    paired over shared examples, with seed noise where the study has replicates); within_noise: whether
    the bin's value trails the curve's best by at most NOISE_SES diff_se. The best bin always is; where
    an SE is unknown, only a bin with an equal value is. noise: what diff_se counts, in words.
    """
    df = _defined(df)
    done = completed(df)
    done = done.assign(lambda_bin=lambda_bin(done["lambda"].astype(float)))
    keys = KEYS + ["lambda_bin"]
    best = _best_rows(done, keys)
    configs = best["config"] if "config" in best else pd.Series(None, index=best.index, dtype=object)
    stored = best["metric_se"] if "metric_se" in best else pd.Series(None, index=best.index, dtype=object)
    noise = [standard_error(m, v, c, se) for m, v, c, se in zip(best["metric_name"], best["value"], configs,
                                                                stored, strict=True)]
    best = best.assign(_trial=best.to_dict("records"))  # for diff_se below
    best = best[keys + ["metric_name", "value", "eta_a", "lambda", "rank", "_trial"]].rename(
        columns={"lambda": "trial_lambda"})
    best.insert(best.columns.get_loc("value") + 1, "se", [n[0] for n in noise])
    best.insert(best.columns.get_loc("se") + 1, "se_basis", [n[1] for n in noise])
    counts = done.groupby(keys).size().rename("trials").reset_index()
    out = best.merge(counts, on=keys)
    out.insert(len(keys), "lambda", 2.0 ** out["lambda_bin"].astype(float))
    out["se"] = out["se"].astype(float)
    signs = _signs(out)
    score = out["value"] * signs
    # Each row's curve's best bin (of equal bests the lowest, as default_lambda picks).
    at_top = score.groupby([out[k] for k in KEYS]).transform("idxmax")
    top = out["value"].loc[at_top].to_numpy()
    up = (out["value"] / top).where(top > 0)
    down = (top / out["value"]).where((out["value"] > 0) & (top > 0))
    out["normalised"] = up.where(signs > 0, down)
    out["normalised_se"] = (out["normalised"] * out["se"] / out["value"].abs()).where(out["value"] != 0)
    gap = (top - out["value"]) * signs
    groups = {key: g for key, g in done.groupby(KEYS, sort=False)}
    seed_var = {key: seed_noise(g)[0] for key, g in groups.items()}
    trials = out["_trial"].to_numpy()
    out["diff_se"] = [diff_se(trials[i], trials[t], seed_var[tuple(trials[i][k] for k in KEYS)])
                      for i, t in zip(range(len(out)), out.index.get_indexer(at_top), strict=True)]
    out["within_noise"] = (gap <= NOISE_SES * out["diff_se"]) | (gap <= 0)
    basis = {key: noise_basis(g) for key, g in groups.items()}
    out["noise"] = [basis[tuple(t[k] for k in KEYS)] for t in trials]
    return _with_setup(out.drop(columns="_trial"), df)


@dataclass(frozen=True)
class DefaultLambda:
    """The recommended default lambda of one model across its tasks, and the bins it cannot tell apart.

    Each (task, definition) is one curve, named in `tasks` (with its setup where the task has several
    definitions: "sst2 [epochs=2]"), its values normalised by its own best (1.0 is that curve's best).
    mean_normalised, its standard error mean_se (from the curves' normalised_se, taken as independent;
    NaN where one is unknown), spread (std across curves, ddof 0) and worst (min across curves) are
    taken at the recommended bin; by_bin maps each bin tried on every curve to its mean normalised value.
    within_noise holds the bins (ascending) whose mean trails the recommended bin's by at most NOISE_SES
    standard errors of the difference: the recommended bin alone when the data orders the rest, several
    when they tie; with an unknown SE only bins of an equal mean tie. excluded names curves left out
    because their best value was <= 0. noise says what those standard errors count (see diff_se).
    """

    model: str
    lambda_bin: int
    mean_normalised: float
    mean_se: float
    spread: float
    worst: float
    by_bin: dict[int, float]
    within_noise: tuple[int, ...]
    tasks: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    noise: str = "evaluation noise, unpaired only: no trials given"

    @property
    def lam(self) -> float:
        return 2.0**self.lambda_bin

    @property
    def n_tasks(self) -> int:
        """Curves averaged: (task, definition) pairs."""
        return len(self.tasks)

    @property
    def tied(self) -> bool:
        return len(self.within_noise) > 1


def default_lambda(df: pd.DataFrame) -> dict[str, DefaultLambda]:
    """Per model, the lambda with the best mean normalised value across its tasks (see ..._from_curve)."""
    return default_lambda_from_curve(lambda_curve(df), df)


def default_lambda_from_curve(curve: pd.DataFrame, trials: pd.DataFrame | None = None
                              ) -> dict[str, DefaultLambda]:
    """Per model (sorted), the recommended lambda from a lambda_curve frame.

    Each (task, definition) curve counts once: two definitions of one task are two labelled curves,
    never pooled. Only bins tried on every (usable) curve of the model compete, so a bin seen on one
    easy task cannot win by absence of evidence. Ties go to the smaller lambda, the more conservative
    choice; `within_noise` says which bins the data cannot order. With one curve this is its best bin,
    spread 0. A model is left out when none of its curves has a best value > 0, or no bin is common to
    all of them.

    With `trials` (the frame the curve was made from), a bin ties with the pick when its mean trails by
    at most NOISE_SES standard errors of the mean difference over curves, each curve's from diff_se
    (paired over its examples, with its seed noise) taken to the normalised scale, the curves taken as
    independent. Without, from the curves' normalised_se, every value's noise taken as independent.
    """
    setup = curve["setup"] if "setup" in curve else pd.Series("", index=curve.index)
    curve = curve.assign(_curve=[curve_label(t, s) for t, s in zip(curve["task"], setup, strict=True)])
    out = {}
    for model, rows in curve.groupby("model", sort=True):
        usable = rows[rows["normalised"].notna()]
        table = usable.pivot(index="lambda_bin", columns="_curve", values="normalised").dropna()
        if table.empty:
            continue
        ses = usable.pivot(index="lambda_bin", columns="_curve", values="normalised_se").reindex_like(table)
        mean = table.mean(axis=1)
        se = np.sqrt((ses**2).sum(axis=1, skipna=False)) / table.shape[1]
        pick = int(mean.idxmax())  # the index is sorted, and idxmax returns the first maximum
        gap = mean[pick] - mean
        noise = DefaultLambda.noise
        if trials is None:
            gap_se = np.hypot(se, se[pick])
        else:
            gap_se, noise = _normalised_gap_se(usable, table, pick, trials)
        within = (gap <= NOISE_SES * gap_se) | (gap <= 0)
        at = table.loc[pick]
        out[str(model)] = DefaultLambda(
            model=str(model),
            lambda_bin=pick,
            mean_normalised=float(mean[pick]),
            mean_se=float(se[pick]),
            spread=float(np.std(at.to_numpy())),
            worst=float(at.min()),
            by_bin={int(b): float(v) for b, v in mean.items()},
            within_noise=tuple(int(b) for b in mean.index[within]),
            tasks=tuple(str(c) for c in table.columns),
            excluded=tuple(sorted(set(rows["_curve"]) - set(usable["_curve"]))),
            noise=noise,
        )
    return out


def _normalised_gap_se(rows: pd.DataFrame, table: pd.DataFrame, pick: int,
                       trials: pd.DataFrame) -> tuple[pd.Series, str]:
    """Per bin of `table` (bins x curves of normalised values): the standard error of the mean over
    curves of (normalised at `pick` - normalised at the bin), and the noise counted, in words. A
    curve's difference in metric units (diff_se) is divided by its best value, or for a metric better
    lower scaled by best / (value_bin value_pick), the first-order change of best / value."""
    done = completed(_defined(trials))
    done = done.assign(lambda_bin=lambda_bin(done["lambda"].astype(float)))
    bests = {tuple(r[k] for k in [*KEYS, "lambda_bin"]): r
             for r in _best_rows(done, [*KEYS, "lambda_bin"]).to_dict("records")}
    groups = {key: g for key, g in done.groupby(KEYS, sort=False)}
    where = {r["_curve"]: tuple(r[k] for k in KEYS) for r in rows.to_dict("records")}
    variance = pd.Series(0.0, index=table.index)
    for c in table.columns:
        key, g = where[c], groups.get(where[c])
        if g is None:
            return pd.Series(NAN_F, index=table.index), DefaultLambda.noise
        seed_var = seed_noise(g)[0]
        at, s = bests[(*key, pick)], _sign_of(bests[(*key, pick)])
        top = max((r["value"] for k, r in bests.items() if k[:len(KEYS)] == key), key=lambda v: v * s)
        for b in table.index:
            row = bests[(*key, b)]
            se = diff_se(at, row, seed_var)
            scale = 1.0 / abs(top) if s > 0 else abs(top) / abs(row["value"] * at["value"])
            variance[b] += (se * scale) ** 2
    noises = sorted({noise_basis(groups[where[c]]) for c in table.columns})
    return np.sqrt(variance) / table.shape[1], "; ".join(noises)


def _sign_of(row: Any) -> float:
    return sign(row["metric_name"]) if isinstance(row.get("metric_name"), str) else (
        -1.0 if row.get("direction") == "minimize" else 1.0)


def defaults_table(defaults: dict[str, DefaultLambda]) -> pd.DataFrame:
    """The recommendations as one row per model, ready for to_format (by_bin left out): within_noise
    lists the lambdas of the tied bins ("4, 8"), tasks and excluded the curves ("; " between them)."""
    columns = ["model", "lambda", "lambda_bin", "mean_normalised", "mean_se", "within_noise", "spread",
               "worst", "n_tasks", "tasks", "excluded", "noise"]
    rows = [
        [d.model, d.lam, d.lambda_bin, d.mean_normalised, d.mean_se,
         ", ".join(f"{2.0**b:g}" for b in d.within_noise), d.spread, d.worst, d.n_tasks,
         "; ".join(d.tasks), "; ".join(d.excluded), d.noise]
        for d in defaults.values()
    ]
    return pd.DataFrame(rows, columns=columns)


def compute_spent(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition): trials in all and by state, total training tokens, total wall
    time in seconds.

    Columns: model, task, definition, trials, complete, pruned, failed, running, interrupted, tokens,
    wall_time_s, ran_on. Every trial counts, whatever its state; trials in other states (e.g. WAITING)
    count only in `trials`. A trial stopped by Ctrl-C or SIGTERM (stored as failed) is `interrupted`,
    not `failed`: its configuration did not fail. `ran_on`: the precision and device of the finished
    trials, each pair with its count where they differ (a study continued on other hardware, or with
    `precision = "auto"` where auto means another precision).
    """
    df = _defined(df)
    reasons = df["stop_reason"] if "stop_reason" in df else pd.Series("", index=df.index)
    stopped = df["state"].eq("FAIL") & reasons.map(was_interrupted)
    flags = df.assign(
        **{name: df["state"].eq(state) for name, state in STATES.items()},
        interrupted=stopped,
        tokens=pd.to_numeric(df["tokens"], errors="coerce"),
        wall_time_s=pd.to_numeric(df["wall_time_s"], errors="coerce"),
    )
    flags["failed"] &= ~stopped
    counted = [*STATES, "interrupted"]
    out = (
        flags.groupby(KEYS, sort=True)
        .agg(
            trials=("state", "size"),
            **{name: (name, "sum") for name in counted},
            tokens=("tokens", "sum"),
            wall_time_s=("wall_time_s", "sum"),
        )
        .reset_index()
    )
    ints = ["trials", *counted, "tokens"]
    out[ints] = out[ints].astype("int64")
    ran = [(*key, _ran_on(g)) for key, g in df.groupby(KEYS, sort=True)]
    return out.merge(pd.DataFrame(ran, columns=[*KEYS, "ran_on"]), on=KEYS, how="left")


def _ran_on(rows: pd.DataFrame) -> str:
    """"fp32, cpu" where every finished trial of `rows` ran so; else each (precision, device) with its
    count, the most common first; "" without a finished trial. "?" for what a trial did not store."""
    done = rows[rows["state"].isin(["COMPLETE", "PRUNED"])]
    if done.empty:
        return ""
    counts = (_text(done, "precision") + ", " + _text(done, "device")).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "; ".join(f"{name} ({n})" for name, n in ordered)


def _text(rows: pd.DataFrame, column: str) -> pd.Series:
    if column not in rows:
        return pd.Series("?", index=rows.index)
    return rows[column].where(rows[column].notna(), "?").astype(str)


# The resolution of the grid a sweep is compared with: eta_A every half decade, lambda every power of
# two (the report's own bins), every rank tried; the LoRA+ paper's grids are about that fine.
GRID_ETA_PER_DECADE = 2


def grid_equivalent(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, definition): what the sweep cost against a full grid over the region it searched.

    The grid spans the eta_A and lambda extent of the trials (GRID_ETA_PER_DECADE points per decade
    of eta_A, one per power-of-two bin of lambda) and every rank tried; each grid point is priced at
    the median cost of a trial that ran to its end (COMPLETE). Columns: model, task, definition, setup,
    trials, wall_time_s, tokens (the sweep, every trial), grid_points, grid_wall_time_s, grid_tokens,
    grid_over_sweep (grid wall time / sweep wall time; > 1: the sweep was cheaper).
    """
    df = _defined(df)
    if "sampler" in df:  # a grid study is a grid already: sweep_vs_grid compares it with the sweep
        df = df[~df["sampler"].eq("grid")]
    rows = []
    for (model, task, definition), g in df.groupby(KEYS, sort=True):
        eta = pd.to_numeric(g["eta_a"], errors="coerce").dropna()
        lam = pd.to_numeric(g["lambda"], errors="coerce").dropna()
        full = g[g["state"].eq("COMPLETE")]
        n_eta = int(round(GRID_ETA_PER_DECADE * math.log10(eta.max() / eta.min()))) + 1 if len(eta) else 0
        bins = lambda_bin(lam[lam > 0]) if len(lam) else pd.Series(dtype=int)
        n_lam = int(bins.max() - bins.min()) + 1 if len(bins) else 0
        points = n_eta * n_lam * int(g["rank"].nunique())
        wall = float(pd.to_numeric(g["wall_time_s"], errors="coerce").fillna(0).sum())
        per_wall = float(pd.to_numeric(full["wall_time_s"], errors="coerce").median()) if len(full) else NAN_F
        per_tokens = float(pd.to_numeric(full["tokens"], errors="coerce").median()) if len(full) else NAN_F
        rows.append({
            "model": model, "task": task, "definition": definition, "trials": len(g), "wall_time_s": wall,
            "tokens": int(pd.to_numeric(g["tokens"], errors="coerce").fillna(0).sum()),
            "grid_points": points, "grid_wall_time_s": points * per_wall, "grid_tokens": points * per_tokens,
            "grid_over_sweep": points * per_wall / wall if wall > 0 else NAN_F,
        })
    out = pd.DataFrame(rows, columns=[*KEYS, "trials", "wall_time_s", "tokens", "grid_points",
                                      "grid_wall_time_s", "grid_tokens", "grid_over_sweep"])
    return _with_setup(out, df)


NAN_F = float("nan")


def to_format(frame: pd.DataFrame, fmt: str) -> str:
    """The frame as csv, json (a list of records, NaN and +-inf as null) or a GitHub markdown table."""
    if fmt == "csv":
        return spreadsheet_safe(frame).to_csv(index=False)
    if fmt == "json":
        records = frame.to_dict(orient="records")
        return json.dumps([{str(k): _json_value(v) for k, v in r.items()} for r in records], allow_nan=False)
    if fmt == "markdown":
        return _markdown(frame)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with ' (shown, not run). Only
    text: numbers, negative ones included, stay numbers."""
    def cell(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(cell) for c in text}) if text else frame


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    # JSON has no spelling for NaN or infinity.
    if _missing(value) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _markdown(frame: pd.DataFrame) -> str:
    # Written here rather than DataFrame.to_markdown, which needs the optional `tabulate` package.
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = [
        "| " + " | ".join(_cell(c) for c in frame.columns) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    for row in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if _missing(value):
        return ""
    text = f"{value:.6g}" if isinstance(value, (float, np.floating)) else str(value)
    # A pipe would end the cell and a newline the row.
    return text.replace("|", "\\|").replace("\n", " ")


def summary(df: pd.DataFrame, within_noise: WithinNoise | None = None) -> pd.DataFrame:
    """Per (model, task, definition): its setup, the best config, the best plain LoRA and the gain, the
    configuration recommended at the centre of the plateau within noise of the best (recommendations),
    the compute spent, how sure the best value and the gain are (judged), and `notes`: what the row cannot
    tell, in words (sweep.analysis.report.notes)."""
    best = best_configs(df).drop(columns=["study", "value", "metric_name"])
    best = best.rename(columns={"number": "best_trial"})
    gain = plain_lora_gain(df).drop(columns=["best_lambda"])
    spent = compute_spent(df)
    out = gain.merge(best, on=KEYS, how="left").merge(spent, on=KEYS, how="right")
    out = out.merge(recommendations(df, within_noise), on=KEYS, how="left")
    out = out.merge(judged(df), on=KEYS, how="left")
    raced = [(*key, race_text(g)) for key, g in _defined(df).groupby(KEYS, sort=True)]
    out = out.merge(pd.DataFrame(raced, columns=[*KEYS, "race"]), on=KEYS, how="left")
    out["race"] = out["race"].fillna("")
    out["lora_plus_trials"] = out["lora_plus_trials"].fillna(0).astype("int64")
    out["notes"] = [notes(r) for r in out.to_dict("records")]
    return _with_setup(out, df)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table of a report, by name; "importance" is per study (sweep.analysis.importance)."""
    curve = lambda_curve(df)
    within_noise = WithinNoise()
    return {
        "summary": summary(df, within_noise),
        "lambda_curve": curve,
        "default_lambda": defaults_table(default_lambda_from_curve(curve, df)),
        "budget": grid_equivalent(df),
        # a replicated trial once, at its mean over seeds, as everywhere in the report
        # over every trial, where collapsed runs can decide the shares, and over those within noise
        "importance": importance_table(pd.concat([completed(df), df[df["state"].ne("COMPLETE")]]),
                                       _near_best(df, within_noise)),
    }


def _near_best(df: pd.DataFrame, within_noise: WithinNoise) -> pd.DataFrame:
    """Per study, its trials within noise of its best (plateau_trials)."""
    parts = [plateau_trials(g, within_noise) for _, g in df.groupby("study", sort=True)]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[:0]


# A race drops a bin whose Holm-corrected one-sided p-value of trailing the leader is below this.
RACE_LEVEL = 0.05
PLAIN_BIN = 0  # in a race, bin 0 stands for plain LoRA's best (lambda = 1), not bin 0's other lambdas


@dataclass(frozen=True)
class Race:
    """Where the replication of a study's contenders stands: the best search trial of each lambda bin
    (`trials`, by bin; PLAIN_BIN is the best plain-LoRA trial), the rounds of replicates the bins
    still in it have run, those bins (`alive`, the leader first), the leader, each alive bin's mean
    over its replicates, and the bins this round's test drops with their Holm-adjusted p-values."""

    trials: dict[int, int]  # bin -> the number of the search trial it re-trains
    rounds: int
    alive: tuple[int, ...]
    leader: int | None
    means: dict[int, float]
    dropped: dict[int, float]

    @property
    def survivors(self) -> tuple[int, ...]:
        return tuple(b for b in self.alive if b not in self.dropped)


def race(trials: pd.DataFrame, level: float = RACE_LEVEL) -> Race | None:
    """One round of racing on the trials of one study (search trials and replicates: trials whose
    replicate_of is the number of the search trial they re-train on a fresh seed); None without a
    contender. The contenders are the best completed search trial of each lambda bin >= 1 and the best
    plain-LoRA trial; a bin is still in the race while its replicates number the most any bin has
    (a bin dropped stops being replicated), and all are in before the first round.

    The leader is the alive bin with the best mean over its replicates alone: the search trial, chosen
    as its bin's best, carries the luck that chose it. Every other alive bin is tested against it:
    d = mean(leader) - mean(bin), in the metric's direction, with the standard error
    sqrt(eval^2 + s^2 (1/n_leader + 1/n_bin)), where eval is the two search trials' difference's
    evaluation noise (diff_se without seed noise: paired over the examples both were scored on; the
    replicates are scored on the same examples, so it does not shrink with seeds) and s^2 the
    seed-to-seed variance pooled over every configuration with several seeds (seed_noise: it assumes
    they all spread alike; the search trials' values, chosen as their bins' best, are among them and
    tend to widen it, so the test errs towards keeping a bin). The one-sided p-value of d > 0 is from
    Student's t with the pooled seed variance's degrees of freedom (the evaluation part taken as
    known), and the p-values of the bins tested are Holm-corrected together: a bin is dropped when its
    adjusted p-value is below `level`, so the chance of dropping any bin that is in truth as good as
    the leader is at most `level` per round (the rounds are not corrected against each other).
    Without seed noise to test against (no replicates yet) nothing is dropped."""
    done = completed(trials)  # replicated search trials folded to their mean over seeds
    if done.empty:
        return None
    scored = done.assign(_score=scores(done), _bin=lambda_bin(done["lambda"].astype(float)))
    plain = scored[is_plain(scored["lambda"])]
    plus = scored[scored["_bin"] >= 1]
    heads = {PLAIN_BIN: _top(plain)} if len(plain) else {}
    for b, rows in plus.groupby("_bin", sort=True):
        heads[int(b)] = _top(rows)
    if not heads:
        return None
    of = pd.to_numeric(trials["replicate_of"], errors="coerce") if "replicate_of" in trials else None
    finished = trials[trials["state"].eq("COMPLETE") & np.isfinite(pd.to_numeric(trials["value"],
                                                                                  errors="coerce"))]
    replicated: dict[int, list[float]] = {}
    for b, head in heads.items():
        reps = (finished[(of.loc[finished.index] == int(head["number"]))
                         & (finished["study"] == head["study"])] if of is not None else finished.iloc[:0])
        reps = reps.assign(_seed=_seeds(reps)).drop_duplicates("_seed")
        replicated[b] = (scores(reps)).tolist()
    rounds = max(len(v) for v in replicated.values())
    alive = [b for b in heads if len(replicated[b]) == rounds]
    numbers = {b: int(h["number"]) for b, h in heads.items()}
    if rounds == 0:
        return Race(numbers, 0, tuple(alive), None, {}, {})
    means = {b: float(np.mean(replicated[b])) for b in alive}
    leader = max(alive, key=lambda b: (means[b], -b))  # of equal means, the smaller lambda
    alive = [leader, *(b for b in alive if b != leader)]
    seed_var, df = seed_noise(done)
    if not df or not math.isfinite(seed_var):
        return Race(numbers, rounds, tuple(alive), leader, means, {})
    p_values = {}
    for b in alive[1:]:
        evaluation = diff_se(heads[leader], heads[b])  # no seed noise: added below, per mean
        se = math.sqrt(evaluation**2 + seed_var * (1 / len(replicated[leader]) + 1 / len(replicated[b])))
        gap = means[leader] - means[b]
        p_values[b] = (float(student_t.sf(gap / se, df)) if se > 0 else (0.0 if gap > 0 else 1.0))
    return Race(numbers, rounds, tuple(alive), leader, {b: means[b] * _sign_of(heads[b]) for b in alive},
                holm(p_values, level))


def _top(rows: pd.DataFrame) -> pd.Series:
    """The best of `rows` (of equal values, the lower number, then the study)."""
    return _best_rows(rows.assign(_all=0), ["_all"]).drop(columns="_all").iloc[0]


def race_text(g: pd.DataFrame) -> str:
    """Where the race of one definition's trials `g` ended, in words; "" where it has no replicates."""
    state = race(g)
    if state is None or not state.rounds:
        return ""
    left = state.survivors

    def name(b: int) -> str:
        return "plain LoRA" if b == PLAIN_BIN else f"lambda {2.0**b:g}"

    said = f"race over {state.rounds} fresh seed(s)"
    if len(left) == 1:
        return f"{said}: {name(left[0])} left, every other bin below it (Holm-corrected)"
    return f"{said}: a tie among {', '.join(name(b) for b in sorted(left))}, which those seeds cannot order"


def holm(p_values: dict[int, float], level: float) -> dict[int, float]:
    """The hypotheses Holm's step-down procedure rejects at family-wise error `level`, with their
    adjusted p-values (the running maximum of (m - i) p_(i)); it assumes nothing of how the tests
    depend on each other (here they share the leader)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m, adjusted, running = len(ordered), {}, 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        if running >= level:
            break
        adjusted[key] = running
    return adjusted
