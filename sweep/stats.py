"""Statistics for `confirm`: LoRA+ against plain LoRA over seeds, paired by seed, how large a gain those
pairs could detect, and how many steps each needs to reach a metric."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

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
    metric that is better lower (sweep.metrics.sign). A non-finite value (a diverged run's infinite
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
