"""PNG plots of a sweep: one study's metric over (eta_A, lambda), and every task's lambda curve."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis import report
from sweep.core.errors import SweepError
from sweep.core.metrics import sign

LAMBDA_LABEL = "lambda = eta_B / eta_A"
# Lambda ticks always cover 1..64, the range the LoRA+ paper discusses, so plots compare at a glance.
LAMBDA_SPAN = (0, 6)


def _pyplot():
    import matplotlib

    # Agg renders without a display (CI, SSH, workers); imported here so `import sweep` stays cheap.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _exponents(logs: np.ndarray, span: tuple[int, int] | None = None) -> list[int]:
    # Whole powers around the data, at least two, so a log axis always shows a labelled tick.
    lo, hi = math.floor(logs.min() + 1e-9), math.ceil(logs.max() - 1e-9)
    if span is not None:
        lo, hi = min(lo, span[0]), max(hi, span[1])
    return list(range(lo, max(hi, lo + 1) + 1))


def _lambda_axis(ax, axis: str, lambdas: pd.Series) -> None:
    from matplotlib.ticker import NullLocator

    ks = _exponents(np.log2(lambdas.to_numpy(float)), LAMBDA_SPAN)
    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"set_{axis}ticks")([2.0**k for k in ks], labels=[f"{2.0**k:g}" for k in ks])
    getattr(ax, f"{axis}axis").set_minor_locator(NullLocator())
    getattr(ax, f"set_{axis}lim")(2.0 ** (ks[0] - 0.3), 2.0 ** (ks[-1] + 0.3))
    getattr(ax, f"set_{axis}label")(LAMBDA_LABEL)


RANK_MARKERS = ("o", "s", "^", "D", "v", "P")
DODGE_DECADES = 0.06  # how far apart, along eta_A, the ranks of one (eta_A, lambda) point are drawn


def dodged(eta_a: pd.Series, i: int, n: int) -> pd.Series:
    """eta_A of the i-th of n ranks, moved a little along the log axis so that a grid's ranks at one
    point sit side by side instead of on top of each other (the middle of the group stays put)."""
    return eta_a * 10.0 ** (DODGE_DECADES * (i - (n - 1) / 2))


def colour_range(done: pd.DataFrame) -> tuple[float, float]:
    """The colour scale of completed trials' values: their range, widened where narrower to one median
    standard error either side of its middle, so that trials within noise of each other look alike
    instead of taking the two ends of the scale."""
    lo, hi = float(done["value"].min()), float(done["value"].max())
    se = math.nan
    if "metric_se" in done:
        se = float(pd.to_numeric(done["metric_se"], errors="coerce").median())
    if math.isfinite(se) and hi - lo < 2 * se:
        lo, hi = (lo + hi) / 2 - se, (lo + hi) / 2 + se
    return lo, hi


def plot_heatmap(df: pd.DataFrame, path: str | Path) -> Path:
    """Scatter of one study's completed trials over (eta_A, lambda), coloured by value, one marker per
    rank; best starred, pruned trials as grey crosses.

    Trials are sampled continuously, not on a grid, so each trial is a point rather than a cell.
    """
    studies = sorted(df["study"].unique())
    if len(studies) != 1:
        raise ValueError(f"plot_heatmap takes the trials of one study; got {len(studies)}: {studies}")
    done = report.completed(df)
    # The best drawn last, on top, in the metric's direction (a loss: the lowest).
    done = done.iloc[report.scores(done).to_numpy().argsort(kind="stable")]
    if done.empty:
        raise SweepError(f"study {studies[0]!r} has no completed trials to plot; run or resume it first")
    best = report.best_configs(done).iloc[0]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        pruned = df[(df["state"] == "PRUNED") & df["eta_a"].notna() & df["lambda"].notna()]
        if not pruned.empty:  # where the search looked and gave up: part of the answer too
            ax.scatter(pruned["eta_a"], pruned["lambda"], marker="x", c="grey", s=40,
                       label=f"pruned ({len(pruned)})")
        ranks = sorted(done["rank"].dropna().unique()) if "rank" in done else []
        vmin, vmax = colour_range(done)
        scale = {"cmap": "viridis", "vmin": vmin, "vmax": vmax}
        best_x = best["eta_a"]
        if len(ranks) < 2:
            points = ax.scatter(done["eta_a"], done["lambda"], c=done["value"], s=45, **scale)
        else:
            for i, r in enumerate(ranks):
                at = done[done["rank"] == r]
                points = ax.scatter(dodged(at["eta_a"], i, len(ranks)), at["lambda"], c=at["value"], s=45,
                                    marker=RANK_MARKERS[i % len(RANK_MARKERS)], edgecolors="black",
                                    linewidths=0.4, label=f"rank {r:g}", **scale)
            if best["rank"] in ranks:
                best_x = dodged(pd.Series([best_x]), ranks.index(best["rank"]), len(ranks)).iloc[0]
        fig.colorbar(points, ax=ax, label=best["metric_name"])
        ax.scatter(
            [best_x],
            [best["lambda"]],
            marker="*",
            s=350,
            c="red",
            edgecolors="black",
            zorder=3,
            label=f"best: {best['value']:.4g} (trial {best['number']})",
        )
        shown = pd.concat([done, pruned])
        ks = _exponents(np.log10(shown["eta_a"].to_numpy(float)))
        ax.set_xscale("log")
        ax.set_xticks([10.0**k for k in ks])
        ax.set_xlim(10.0 ** (ks[0] - 0.1), 10.0 ** (ks[-1] + 0.1))
        ax.set_xlabel("eta_A")
        _lambda_axis(ax, "y", shown["lambda"])
        title = f"{best['model']} / {best['task']}: {best['metric_name']}\nstudy {studies[0]}"
        ax.set_title(title, fontsize=10)
        # below the axes: on a grid, every place inside them holds points
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize=8, frameon=False)
        fig.tight_layout()
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_lambda_curves(curve: pd.DataFrame, path: str | Path, trials: pd.DataFrame | None = None) -> Path:
    """The lambda curves (a report.lambda_curve frame) as a PNG: see lambda_curves_figure."""
    plt = _pyplot()
    fig = lambda_curves_figure(curve, trials)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")  # tight: the legend lies outside the panels
    finally:
        plt.close(fig)
    return Path(path)


def curve_panels(curve: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The panels of the lambda-curve figure: one per (task, metric), a task's setup in its name where
    it has several definitions, as (task label, metric, its rows), sorted. Values of one panel share
    their units; two tasks, or two metrics, never share an axis."""
    setup = curve["setup"] if "setup" in curve else pd.Series("", index=curve.index)
    labels = [report.curve_label(t, s) for t, s in zip(curve["task"], setup.fillna(""), strict=True)]
    keyed = curve.assign(_panel=labels, _metric=curve["metric_name"].fillna("metric").astype(str))
    return [(str(label), str(metric), rows.drop(columns=["_panel", "_metric"]))
            for (label, metric), rows in keyed.groupby(["_panel", "_metric"], sort=True)]


def bins_with_gaps(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One curve's (lambda, value) over every power-of-two bin from its first to its last, NaN in the
    bins without a completed trial: a line drawn through them breaks there instead of spanning them."""
    bins = rows["lambda_bin"].astype(int).to_numpy()
    values = pd.Series(rows["value"].to_numpy(float), index=bins)
    every = np.arange(bins.min(), bins.max() + 1)
    return 2.0**every, values.reindex(every).to_numpy(float)


def lambda_curves_figure(curve: pd.DataFrame, trials: pd.DataFrame | None = None):
    """The best value in each lambda bin, in the metric's own units: a panel per task and metric (no
    normalisation, so a panel reads as the report's table), a line per model, each bin's standard error
    as an error bar where it is known. Markers stand for the bins tried; a line joins neighbouring bins
    only, never one across a bin without a completed trial. Each model's default lambda is marked
    (with the bins tied with it) where its task is. The legend lies below the panels, outside every
    data area. `trials`, the frame of the curve, lets the ties be judged as the report's table judges
    them (report.default_lambda_from_curve). The caller closes the figure."""
    if curve.empty:
        raise SweepError("no completed trials to plot; run the sweep first")
    defaults = report.default_lambda_from_curve(curve, trials)
    panels = curve_panels(curve)
    models = sorted(curve["model"].astype(str).unique())
    plt = _pyplot()
    colours = dict(zip(models, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
    styles = dict(zip(models, itertools.cycle(["--", ":", "-."])))
    cols = min(len(panels), 3)
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.6 * rows_n), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (label, metric, rows) in zip(axes.flat, panels, strict=False):  # more axes than panels
        for (model, _), c in rows.groupby(["model", "definition"], sort=True):
            c = c.sort_values("lambda_bin")
            colour = colours[str(model)]
            ax.plot(*bins_with_gaps(c), "-", color=colour, linewidth=1.2)
            handles[str(model)] = ax.errorbar(c["lambda"], c["value"], yerr=c["se"].to_numpy(float),
                                              fmt="o", color=colour, capsize=3)
            d = defaults.get(str(model))
            if d is not None:
                ties = ", ".join(f"{2.0**b:g}" for b in d.within_noise)
                text = f"default {d.model}: {d.lam:g}" + (f" (tied within noise: {ties})" if d.tied else "")
                handles[text] = ax.axvline(d.lam, color=colour, linestyle=styles[str(model)], linewidth=1)
        _lambda_axis(ax, "x", rows["lambda"])
        better = "lower" if sign(metric) < 0 else "higher"
        ax.set_ylabel(f"{metric} ({better} is better)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Best metric in each lambda bin, over eta_A and rank", fontsize=11)
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(handles), 3), fontsize="small", frameon=False)
    return fig


def plot_convergence(c, path: str | Path) -> Path:
    """Mean metric over seeds against training steps for a confirmed study's two configurations,
    with the step at which LoRA+ first reaches plain LoRA's final value (a
    sweep.study.confirm.Confirmation)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        labels = {"lora+": "LoRA+", "lora": "plain LoRA (lambda = 1)"}
        for arm, colour in (("lora+", "tab:red"), ("lora", "tab:blue")):
            curve = c.curves.get(arm) or []
            if curve:
                cfg = c.arms.get(arm, {})
                label = f"{labels[arm]}: eta_A {cfg.get('eta_a', 0):.2g}, lambda {cfg.get('lambda', 0):.3g}"
                ax.plot(*zip(*curve, strict=True), marker="o", ms=3, c=colour, label=label)
        if c.curves.get("lora"):
            final = c.curves["lora"][-1][1]
            ax.axhline(final, ls=":", c="tab:blue", lw=1)
            if c.steps_plus is not None:
                ax.axvline(c.steps_plus, ls="--", c="tab:red", lw=1,
                           label=f"LoRA+ reaches plain LoRA's final value: step {c.steps_plus}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{c.metric_name} (mean over {c.seeds} seeds)")
        ax.set_title(f"{c.model} / {c.task}: convergence\nstudy {c.study}", fontsize=10)
        ax.grid(alpha=0.3)
        # Below the axes: a curve that stays flat (e.g. at the majority class) would hide under it.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
        fig.tight_layout()
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_importance(rows: pd.DataFrame, path: str | Path) -> Path:
    """One study's fANOVA shares (its rows of sweep.analysis.importance.importance_table): a panel of bars per
    parameterisation, lambda first, the interactions in grey."""
    studies = sorted(rows["study"].unique())
    if len(studies) != 1:
        raise ValueError(f"plot_importance takes the rows of one study; got {len(studies)}: {studies}")
    measured = rows[rows["interactions"].notna()]
    if measured.empty:
        raise SweepError(f"study {studies[0]!r}: {rows['answer'].iloc[0]}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(measured), figsize=(4.2 * len(measured), 3.2), squeeze=False)
    try:
        for ax, r in zip(axes[0], measured.to_dict("records"), strict=True):
            params = r["parameters"].split(", ")
            names = ["lambda", *(p for p in params if p != "lambda"), "interactions"]
            shares = [r[n] for n in names]
            colours = ["tab:red" if n == "lambda" else "grey" if n == "interactions" else "tab:blue"
                       for n in names]
            bars = ax.barh(names, [0.0 if math.isnan(s) else 100 * s for s in shares], color=colours)
            ax.bar_label(bars, labels=["one value" if math.isnan(s) else f"{100 * s:.0f} %" for s in shares],
                         padding=3, fontsize=8)
            ax.invert_yaxis()  # lambda on top
            ax.set_xlim(0, 115)
            ax.set_xlabel("share of the metric's variance (%)")
            among = "" if r.get("among", "all") == "all" else f", {r['trials']} trials {r['among']}"
            ax.set_title(f"over {r['parameters']}{among}", fontsize=9)
        first = measured.iloc[0]
        fig.suptitle(f"{first['model']} / {first['task']}: what explains {first['metric_name']} (fANOVA, "
                     f"{first['trials']} trials)\nstudy {studies[0]}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)
