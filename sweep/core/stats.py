"""Statistics for `confirm`: LoRA+ against plain LoRA over seeds, paired by seed, how large a gain those
pairs could detect, and how many steps each needs to reach a metric; and for the report, the standard
error of two trials' difference, paired over the examples they share, and the seed-to-seed noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from sweep.core import outcomes
from sweep.core.metrics import BOOTSTRAP_RESAMPLES, METRICS, bootstrap

MIN_PAIRS = 3  # with 2 pairs the t interval has 1 degree of freedom: too wide to mean anything
POWER = 0.8  # the power of the minimum detectable effect


@dataclass(frozen=True)
class Paired:
    """Two configurations' metrics over the same seeds; differences are how much better LoRA+ did than
    plain LoRA (LoRA+ minus plain LoRA, or the reverse for a metric that is better lower)."""

    n: int
    mean_plus: float
    std_plus: float
    mean_plain: float
    std_plain: float
    diff_mean: float
    diff_std: float
    ci_low: float  # confidence interval of the mean difference (Student t, n - 1 degrees of freedom)
    ci_high: float
    p_value: float  # two-sided paired t-test
    level: float
    mde: float  # the smallest true gain these pairs detect with POWER, from diff_std (nan: unknown)

    @property
    def enough(self) -> bool:
        """Enough pairs (MIN_PAIRS) for a significance claim."""
        return self.n >= MIN_PAIRS

    @property
    def significant(self) -> bool:
        """Enough pairs, and the interval excludes zero (equivalently p < 1 - level)."""
        return bool(self.enough and (self.ci_low > 0 or self.ci_high < 0))


def paired(plus: Sequence[float], plain: Sequence[float], level: float = 0.95, sign: float = 1.0) -> Paired:
    """Paired comparison of per-seed metrics: `plus[i]` and `plain[i]` share seed i. `sign` is -1 for a
    metric that is better lower (sweep.core.metrics.sign). A non-finite value (a diverged run's infinite
    loss) leaves the interval, p and the detectable effect undefined (nan), never significant."""
    a, b = np.asarray(plus, float), np.asarray(plain, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equal-length lists of >= 2 paired values, got {len(a)} and {len(b)}")
    n = len(a)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        nan = float("nan")
        with np.errstate(invalid="ignore"):
            d = (a - b) * sign
            return Paired(n, float(a.mean()), _std(a), float(b.mean()), _std(b), float(d.mean()), _std(d),
                          nan, nan, nan, level, nan)
    d = (a - b) * sign
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= 1e-12:  # identical differences (up to float rounding): no spread to test against
        low = high = mean
        p = 1.0 if abs(mean) <= 1e-12 else 0.0
    else:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return Paired(n, float(a.mean()), float(a.std(ddof=1)), float(b.mean()), float(b.std(ddof=1)),
                  mean, sd, low, high, p, level, min_detectable_effect(sd, n, level))


def _std(x: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.std(x, ddof=1))


def paired_t_power(effect: float, sd: float, n: int, level: float = 0.95) -> float:
    """The chance that a two-sided paired t-test at `level` over n pairs finds a true mean difference
    `effect` when the differences spread with standard deviation `sd` (noncentral t)."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    crit = float(stats.t.ppf(0.5 + level / 2, df))
    # Each tail as an upper tail: scipy's lower tail of a far-shifted noncentral t can come out nan.
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def min_detectable_effect(sd: float, n: int, level: float = 0.95, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at `level` over n pairs finds with
    probability `power`, for differences with standard deviation `sd` (0 for sd 0; nan for n < 2 or
    a non-finite sd)."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd <= 1e-12:
        return 0.0
    high = sd
    while paired_t_power(high, sd, n, level) < power:
        high *= 2
    return float(optimize.brentq(lambda e: paired_t_power(e, sd, n, level) - power, 0.0, high,
                                 xtol=1e-12 * sd, rtol=1e-10))


def paired_se(metric: str, a: object, b: object, resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = 0) -> float | None:
    """The standard error of value(a) - value(b) for two trials' per-example records (sweep.core.outcomes)
    of the same examples in the same order; None where either has no record or they do not line up
    (the caller then combines the trials' own SEs as if independent).

    It assumes the examples are independent draws from the population the validation split stands
    for, and the two trained models fixed: it measures evaluation noise only, not the seed's. Pairing
    removes what the examples share (an example both get right or both get wrong adds nothing), so it
    is at most about the unpaired sqrt(se_a^2 + se_b^2), and much smaller where the two mostly agree.
    - accuracy: the mean of d_i = correct_a,i - correct_b,i, its SE std(d) / sqrt(n);
    - a causal LM's loss per token, both scored on the same trained tokens T: the difference is
      sum(nll_a,i - nll_b,i) / T, its SE sqrt(n) std(d) / T (T taken as fixed);
    - any other metric (F1, macro-F1, MCC, Pearson, Spearman, perplexity), not a mean of per-example
      terms: a paired bootstrap, each resample of the examples scoring both trials on the same ones.
    """
    if not outcomes.aligned(a, b):
        return None
    x, y = outcomes.arrays(a), outcomes.arrays(b)
    if x is None or y is None:
        return None
    n = int(a["n"])  # type: ignore[index]
    if n < 2:
        return None
    if metric in outcomes.MEAN_OF_CORRECT and "correct" in x and "correct" in y:
        d = x["correct"].astype(float) - y["correct"].astype(float)
        return float(d.std(ddof=1) / math.sqrt(n))
    if metric == "loss" and {"nll", "tokens"} <= set(x) & set(y) and np.array_equal(x["tokens"], y["tokens"]):
        total = float(x["tokens"].sum())
        d = x["nll"] - y["nll"]
        return float(math.sqrt(n) * d.std(ddof=1) / total) if total > 0 else None
    fa, fb = _statistic(metric, x), _statistic(metric, y)
    if fa is None or fb is None:
        return None
    return bootstrap(lambda i: fa(i) - fb(i), n, resamples, seed)


def _statistic(metric: str, x: dict[str, np.ndarray]):
    """metric(indices) recomputed from a record's arrays; None where the record cannot give it."""
    if metric in ("loss", "perplexity") and {"nll", "tokens"} <= set(x):
        def loss(i: np.ndarray) -> float:
            value = float(x["nll"][i].sum()) / max(int(x["tokens"][i].sum()), 1)
            return value if metric == "loss" else (math.exp(value) if value < 700 else math.inf)
        return loss
    if metric in METRICS and {"pred", "gold"} <= set(x):
        return lambda i: METRICS[metric](x["pred"][i], x["gold"][i])
    if metric in outcomes.MEAN_OF_CORRECT and "correct" in x:
        return lambda i: float(x["correct"][i].mean())
    return None


def unpaired_se(se_a: float, se_b: float) -> float:
    """The standard error of a difference of two values whose errors are independent: trials scored
    on separate examples, or a fallback where the examples' pairing is unknown (an overestimate where
    they share examples and mostly agree)."""
    return float(math.hypot(se_a, se_b))


def seed_variance(values: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The seed-to-seed variance of a trial's value, pooled over groups of replicates (each group: one
    configuration's values at different seeds), and its degrees of freedom (sum of size - 1; 0: no
    replicates, variance NaN). It assumes every configuration spreads alike over seeds; scored on one
    validation split, it is the spread of the trained models as that split sees them."""
    sums, df = 0.0, 0
    for group in values:
        v = np.asarray(group, float)
        v = v[np.isfinite(v)]
        if len(v) >= 2:
            sums += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
    return (sums / df if df else math.nan), df


def mean_curve(histories: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean metric at each evaluation step that every run reached."""
    if not histories:
        return []
    common = set.intersection(*({int(s) for s, _ in h} for h in histories))
    by_step = [dict((int(s), float(m)) for s, m in h) for h in histories]
    return [(s, float(np.mean([h[s] for h in by_step]))) for s in sorted(common)]


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float, sign: float = 1.0) -> int | None:
    """The first evaluation step at which the curve reaches `target` (at or above it; at or below for
    `sign` -1, a metric better lower); None if it never does."""
    return next((int(s) for s, m in curve if m * sign >= target * sign), None)
