"""Report aggregation over a sweep's trials: best configs, the gain over plain LoRA, the lambda curve.

Every function takes the trials frame (one row per trial: study, model, task, metric_name, number,
state, value, eta_a, lambda, rank, init, tokens, wall_time_s; other columns are ignored) and returns a
new frame or value; nothing here reads or writes anything. Which way a value is better follows its
metric_name (sweep.metrics: higher for accuracy, F1, MCC, Pearson; lower for a causal LM's loss and
perplexity): "best" and "gain" always mean better in the metric's own direction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sweep.metrics import sign

KEYS = ["model", "task"]
CONFIG_COLUMNS = ["study", "number", "eta_a", "lambda", "rank", "init", "value", "metric_name"]
# "lambda == 1" within this relative tolerance: a 1.0 that went through float round trips is still plain LoRA.
PLAIN_RTOL = 1e-6
# Output column -> Optuna state name.
STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}
FORMATS = ("csv", "json", "markdown")


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """Trials with state COMPLETE and a finite value (Optuna completes a trial that returned +-inf)."""
    values = pd.to_numeric(df["value"], errors="coerce")
    return df[df["state"].eq("COMPLETE") & np.isfinite(values)]


def _signs(df: pd.DataFrame) -> pd.Series:
    """+1 per row whose metric is better higher, -1 where it is better lower."""
    return df["metric_name"].map(lambda m: sign(str(m)) if isinstance(m, str) else 1.0).astype(float)


def _best_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Ties go to the earlier trial (lower number), then to the study name, so every run picks the same row.
    scored = df.assign(_score=pd.to_numeric(df["value"], errors="coerce") * _signs(df))
    ordered = scored.sort_values(["_score", "number", "study"], ascending=[False, True, True],
                                 kind="mergesort")
    return ordered.drop_duplicates(keys).sort_values(keys).drop(columns="_score").reset_index(drop=True)


def best_configs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task): the best completed trial's study, number, config, value and metric."""
    return _best_rows(completed(df), KEYS)[KEYS + CONFIG_COLUMNS]


def is_plain(lam: pd.Series) -> pd.Series:
    """True where lambda is 1 (plain LoRA), within PLAIN_RTOL."""
    return pd.Series(np.isclose(lam.astype(float), 1.0, rtol=PLAIN_RTOL, atol=0.0), index=lam.index)


def is_plain_value(lam: float) -> bool:
    """`is_plain` for one lambda."""
    return bool(np.isclose(float(lam), 1.0, rtol=PLAIN_RTOL, atol=0.0))


def plain_lora_gain(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): best value with lambda = 1, best value overall, and the gain: how much better
    best is than best_plain in the metric's direction (best - best_plain; for a loss, best_plain - best).

    Columns: model, task, metric_name, best, best_lambda, best_plain, plain_eta_a, plain_rank (Int64),
    gain. The plain columns and gain are NaN/NA where the task has no completed lambda = 1 trial.
    """
    done = completed(df)
    best = _best_rows(done, KEYS)[KEYS + ["metric_name", "value", "lambda"]]
    best = best.rename(columns={"value": "best", "lambda": "best_lambda"})
    plain = _best_rows(done[is_plain(done["lambda"])], KEYS)[KEYS + ["value", "eta_a", "rank"]]
    plain = plain.rename(columns={"value": "best_plain", "eta_a": "plain_eta_a", "rank": "plain_rank"})
    out = best.merge(plain, on=KEYS, how="left")
    out["plain_rank"] = out["plain_rank"].astype("Int64")
    out["gain"] = (out["best"] - out["best_plain"]) * _signs(out) + 0.0  # + 0.0: no "-0" for a tie
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


def lambda_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, lambda bin): the best value over every eta_a and rank, and what achieved it.

    Long format, sorted by model, task, lambda_bin. Columns: model, task, lambda_bin, lambda (= 2^bin),
    metric_name, value, eta_a, trial_lambda and rank of the best trial (bin 0 holds lambda up to 1.41,
    so trial_lambda says whether its best was plain LoRA), trials (completed trials in the bin), and
    normalised: 1 at the task's best bin, less elsewhere (value / the best, or for a metric better
    lower, the best / value); NaN when a ratio says nothing (a best <= 0, e.g. an MCC that never left 0;
    a loss <= 0).
    """
    done = completed(df)
    done = done.assign(lambda_bin=lambda_bin(done["lambda"].astype(float)))
    keys = KEYS + ["lambda_bin"]
    best = _best_rows(done, keys)[keys + ["metric_name", "value", "eta_a", "lambda", "rank"]]
    best = best.rename(columns={"lambda": "trial_lambda"})
    counts = done.groupby(keys).size().rename("trials").reset_index()
    out = best.merge(counts, on=keys)
    out.insert(3, "lambda", 2.0 ** out["lambda_bin"].astype(float))
    signs = _signs(out)
    higher = signs > 0
    top = out.assign(_s=out["value"] * signs).groupby(KEYS)["_s"].transform("max") * signs  # the best value
    up = (out["value"] / top).where(top > 0)
    down = (top / out["value"]).where((out["value"] > 0) & (top > 0))
    out["normalised"] = up.where(higher, down)
    return out


@dataclass(frozen=True)
class DefaultLambda:
    """The recommended default lambda of one model across its tasks.

    Values are normalised per task (value / the task's best over all bins, so 1.0 is that task's best).
    mean_normalised, spread (std across tasks, ddof 0) and worst (min across tasks) are taken at the
    recommended bin; by_bin maps each bin tried on every task to its mean normalised value. excluded
    names tasks left out because their best value was <= 0.
    """

    model: str
    lambda_bin: int
    mean_normalised: float
    spread: float
    worst: float
    n_tasks: int
    by_bin: dict[int, float]
    excluded: tuple[str, ...] = ()

    @property
    def lam(self) -> float:
        return 2.0**self.lambda_bin


def default_lambda(df: pd.DataFrame) -> dict[str, DefaultLambda]:
    """Per model, the lambda with the best mean normalised value across its tasks (see ..._from_curve)."""
    return default_lambda_from_curve(lambda_curve(df))


def default_lambda_from_curve(curve: pd.DataFrame) -> dict[str, DefaultLambda]:
    """Per model (sorted), the recommended lambda from a lambda_curve frame.

    Only bins tried on every (usable) task of the model compete, so a bin seen on one easy task cannot
    win by absence of evidence. Ties go to the smaller lambda, the more conservative choice. With one
    task this is that task's best bin, spread 0. A model is left out when none of its tasks has a best
    value > 0, or no bin is common to all of them.
    """
    out = {}
    for model, rows in curve.groupby("model", sort=True):
        usable = rows[rows["normalised"].notna()]
        table = usable.pivot(index="lambda_bin", columns="task", values="normalised").dropna()
        if table.empty:
            continue
        mean = table.mean(axis=1)
        pick = int(mean.idxmax())  # the index is sorted, and idxmax returns the first maximum
        at = table.loc[pick]
        out[str(model)] = DefaultLambda(
            model=str(model),
            lambda_bin=pick,
            mean_normalised=float(mean[pick]),
            spread=float(np.std(at.to_numpy())),
            worst=float(at.min()),
            n_tasks=table.shape[1],
            by_bin={int(b): float(v) for b, v in mean.items()},
            excluded=tuple(sorted(set(rows["task"]) - set(usable["task"]))),
        )
    return out


def defaults_table(defaults: dict[str, DefaultLambda]) -> pd.DataFrame:
    """The recommendations as one row per model, ready for to_format (by_bin left out)."""
    columns = ["model", "lambda", "lambda_bin", "mean_normalised", "spread", "worst", "n_tasks", "excluded"]
    rows = [
        [d.model, d.lam, d.lambda_bin, d.mean_normalised, d.spread, d.worst, d.n_tasks, ", ".join(d.excluded)]
        for d in defaults.values()
    ]
    return pd.DataFrame(rows, columns=columns)


def compute_spent(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): trials in all and by state, total training tokens, total wall time in seconds.

    Columns: model, task, trials, complete, pruned, failed, running, tokens, wall_time_s. Every trial
    counts, whatever its state; trials in other states (e.g. WAITING) count only in `trials`.
    """
    flags = df.assign(
        **{name: df["state"].eq(state) for name, state in STATES.items()},
        tokens=pd.to_numeric(df["tokens"], errors="coerce"),
        wall_time_s=pd.to_numeric(df["wall_time_s"], errors="coerce"),
    )
    out = (
        flags.groupby(KEYS, sort=True)
        .agg(
            trials=("state", "size"),
            **{name: (name, "sum") for name in STATES},
            tokens=("tokens", "sum"),
            wall_time_s=("wall_time_s", "sum"),
        )
        .reset_index()
    )
    ints = ["trials", *STATES, "tokens"]
    out[ints] = out[ints].astype("int64")
    return out


# The resolution of the grid a sweep is compared with: eta_A every half decade, lambda every power of
# two (the report's own bins), every rank tried; the LoRA+ paper's grids are about that fine.
GRID_ETA_PER_DECADE = 2


def grid_equivalent(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): what the sweep cost against a full grid over the region it searched.

    The grid spans the eta_A and lambda extent of the trials (GRID_ETA_PER_DECADE points per decade
    of eta_A, one per power-of-two bin of lambda) and every rank tried; each grid point is priced at
    the median cost of a trial that ran to its end (COMPLETE). Columns: model, task, trials,
    wall_time_s, tokens (the sweep, every trial), grid_points, grid_wall_time_s, grid_tokens,
    grid_over_sweep (grid wall time / sweep wall time; > 1: the sweep was cheaper).
    """
    rows = []
    for (model, task), g in df.groupby(KEYS, sort=True):
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
            "model": model, "task": task, "trials": len(g), "wall_time_s": wall,
            "tokens": int(pd.to_numeric(g["tokens"], errors="coerce").fillna(0).sum()),
            "grid_points": points, "grid_wall_time_s": points * per_wall, "grid_tokens": points * per_tokens,
            "grid_over_sweep": points * per_wall / wall if wall > 0 else NAN_F,
        })
    return pd.DataFrame(rows, columns=["model", "task", "trials", "wall_time_s", "tokens", "grid_points",
                                       "grid_wall_time_s", "grid_tokens", "grid_over_sweep"])


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


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task): the best config, the best plain LoRA and the gain, and the compute spent."""
    best = best_configs(df).drop(columns=["study", "value", "metric_name"])
    best = best.rename(columns={"number": "best_trial"})
    gain = plain_lora_gain(df).drop(columns=["best_lambda"])
    spent = compute_spent(df)
    return gain.merge(best, on=KEYS, how="left").merge(spent, on=KEYS, how="right")


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table of a report, by name."""
    curve = lambda_curve(df)
    return {
        "summary": summary(df),
        "lambda_curve": curve,
        "default_lambda": defaults_table(default_lambda_from_curve(curve)),
        "budget": grid_equivalent(df),
    }
