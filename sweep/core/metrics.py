"""Validation metrics, as pure functions of predictions and labels, and which way each is better:
higher for every classification metric, lower for a causal LM's loss and perplexity."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from sweep.core.errors import SweepError

MAIN_SPLIT = "validation"  # its metrics keep their own names; other splits' get the split's as suffix
LOWER_IS_BETTER = ("loss", "perplexity")


def lower_is_better(name: str) -> bool:
    """A metric (or one of another split, `loss_mismatched`) that is better when lower."""
    return any(name == m or name.startswith(m + "_") for m in LOWER_IS_BETTER)


def direction(name: str) -> str:
    """The Optuna study direction of a metric."""
    return "minimize" if lower_is_better(name) else "maximize"


def main_metric(available: Sequence[str], wanted: str | None, where: str) -> str:
    """`wanted` if the task has it (a SweepError if not), else the task's first metric."""
    if wanted is None:
        return available[0]
    if wanted not in available:
        raise SweepError(f"metric {wanted!r} is not one of {where}'s: {', '.join(available)}")
    return wanted


def sign(name: str) -> float:
    """+1 where higher is better, -1 where lower is: `sign * value` is always higher-is-better."""
    return -1.0 if lower_is_better(name) else 1.0


def accuracy(pred: Sequence[float], gold: Sequence[float]) -> float:
    p, g = np.asarray(pred), np.asarray(gold)
    return float((p == g).mean())


def f1(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Binary F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float((p & g).sum())
    denom = float(p.sum() + g.sum())
    return 2 * tp / denom if denom else 0.0


def macro_f1(pred: Sequence[float], gold: Sequence[float]) -> float:
    p, g = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in np.unique(g):
        tp = float(((p == c) & (g == c)).sum())
        denom = float((p == c).sum() + (g == c).sum())
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def matthews(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; the binary MCC for two classes)."""
    p, g = np.asarray(pred), np.asarray(gold)
    classes = np.unique(np.concatenate([p, g]))
    conf = np.array([[np.sum((g == a) & (p == b)) for b in classes] for a in classes], dtype=float)
    t, q = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    denom = math.sqrt((s * s - q @ q) * (s * s - t @ t))
    return float((c * s - t @ q) / denom) if denom else 0.0


def pearson(pred: Sequence[float], gold: Sequence[float]) -> float:
    p, g = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    if p.std() == 0 or g.std() == 0:
        return 0.0
    return float(np.corrcoef(p, g)[0, 1])


def spearman(pred: Sequence[float], gold: Sequence[float]) -> float:
    # Average ranks for ties, then Pearson of the ranks.
    return pearson(pd.Series(pred).rank().to_numpy(), pd.Series(gold).rank().to_numpy())


METRICS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], pred: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    """All named metrics; NaN predictions (a diverged regression head) score as the worst value."""
    if np.isnan(np.asarray(pred, dtype=float)).any():
        return {name: -1.0 if name in ("matthews", "pearson", "spearman") else 0.0 for name in names}
    return {name: METRICS[name](pred, gold) for name in names}


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_se(name: str, pred: Sequence[float], gold: Sequence[float],
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """The standard error of metric `name` on these examples (for accuracy, about the binomial
    sqrt(p (1 - p) / n)). NaN for predictions with NaN: a diverged run scores its worst, not a
    measurement."""
    p, g = np.asarray(pred), np.asarray(gold)
    if np.isnan(p.astype(float)).any():
        return math.nan
    metric = METRICS[name]
    return bootstrap(lambda i: metric(p[i], g[i]), len(g), resamples, seed)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """The standard error of statistic(indices) over n examples: its spread over seeded resamples of
    the examples with replacement. NaN for fewer than two examples."""
    if n < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    # One resample at a time: QQP's 40,000 examples x 1,000 resamples would be 320 MB of indices.
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
    return float(np.std(values, ddof=1))


def compute_splits(
    names: Sequence[str], preds: Mapping[str, Sequence[float]], golds: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """`compute` on each evaluation split: the main split's metrics first under their own names, then
    every other split's as `metric_split` (MNLI: accuracy, then accuracy_mismatched)."""
    order = sorted(preds, key=lambda split: split != MAIN_SPLIT)
    return {
        name if split == MAIN_SPLIT else f"{name}_{split}": value
        for split in order
        for name, value in compute(names, preds[split], golds[split]).items()
    }
