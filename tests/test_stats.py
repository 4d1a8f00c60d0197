"""confirm's statistics on fixed numbers with known answers."""

import math

import pytest

from sweep.core.stats import (
    MIN_PAIRS,
    mean_curve,
    min_detectable_effect,
    paired,
    paired_t_power,
    steps_to_reach,
)

PLUS = [0.80, 0.82, 0.81, 0.83, 0.79]
PLAIN = [0.78, 0.79, 0.80, 0.80, 0.78]  # differences 0.02, 0.03, 0.01, 0.03, 0.01: mean 0.02, sd 0.01


def test_paired_gain_interval_and_p_value():
    p = paired(PLUS, PLAIN)
    assert p.n == 5 and p.diff_mean == pytest.approx(0.02) and p.diff_std == pytest.approx(0.01)
    half = 2.7764451 * 0.01 / math.sqrt(5)  # t(0.975, 4 df) from the table
    assert (p.ci_low, p.ci_high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert p.p_value == pytest.approx(0.0110565, rel=1e-4)  # t = 4.4721 on 4 df, two-sided
    assert p.significant
    assert p.mean_plus == pytest.approx(0.81) and p.mean_plain == pytest.approx(0.79)
    assert p.std_plus == pytest.approx(math.sqrt(0.001 / 4))


def test_a_gain_within_the_noise_is_not_significant():
    p = paired([0.80, 0.78, 0.81], [0.79, 0.80, 0.80])  # differences +0.01, -0.02, +0.01
    assert p.ci_low < 0 < p.ci_high and not p.significant and p.p_value > 0.5


def test_identical_differences_have_a_point_interval():
    p = paired([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert p.ci_low == pytest.approx(0.1) == p.ci_high and p.significant and p.p_value == 0.0
    assert p.mde == 0.0  # no spread: any gain shows
    tie = paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert not tie.significant and tie.p_value == 1.0


def test_two_pairs_never_make_a_significance_claim():
    assert MIN_PAIRS == 3
    # differences 0.20 and 0.19: t = 0.195 / (0.00707 / sqrt 2) = 39 on 1 df, p = (2 / pi) atan(1 / 39)
    two = paired([0.90, 0.89], [0.70, 0.70])
    assert two.p_value == pytest.approx(2 / math.pi * math.atan(1 / 39), rel=1e-6) and two.ci_low > 0
    assert not two.enough and not two.significant


def test_a_metric_better_lower_counts_a_lower_loss_as_the_gain():
    p = paired([1.0, 1.1, 0.9], [1.2, 1.4, 1.1], sign=-1.0)  # LoRA+ lower loss by 0.2, 0.3, 0.2
    assert p.diff_mean == pytest.approx(0.7 / 3) and p.ci_low > 0 and p.significant


def test_an_infinite_loss_leaves_the_test_undefined_not_significant():
    p = paired([1.0, float("inf"), 0.9], [1.2, 1.4, 1.1], sign=-1.0)  # one LoRA+ run diverged
    assert p.diff_mean == -math.inf and p.mean_plus == math.inf
    assert math.isnan(p.ci_low) and math.isnan(p.p_value) and math.isnan(p.mde) and not p.significant


def test_power_and_minimum_detectable_effect_of_a_paired_t_test():
    # G*Power's one-sample (= paired) t-test, two-sided at 0.05: effect d = 0.5 with 34 pairs has
    # power 0.8077775; so 34 pairs detect 80 % of the time an effect a little under 0.5 SD.
    assert paired_t_power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    mde = min_detectable_effect(1.0, 34)
    assert 0.49 < mde < 0.5 and paired_t_power(mde, 1.0, 34) == pytest.approx(0.8, abs=1e-9)
    # it scales with the spread, and tends to the normal approximation (1.96 + 0.8416) SD / sqrt(n)
    assert min_detectable_effect(0.02, 34) == pytest.approx(0.02 * mde)
    assert min_detectable_effect(1.0, 2000) * math.sqrt(2000) == pytest.approx(1.959964 + 0.841621, rel=2e-3)
    # few pairs detect only large effects; two pairs barely any
    assert min_detectable_effect(1.0, 5) == pytest.approx(1.682, abs=1e-3)
    assert min_detectable_effect(1.0, 2) > 10 and math.isnan(min_detectable_effect(1.0, 1))
    assert paired(PLUS, PLAIN).mde == pytest.approx(0.01 * min_detectable_effect(1.0, 5))


def test_pairs_must_match():
    with pytest.raises(ValueError, match="equal-length"):
        paired([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired([0.1], [0.2])


def test_mean_curve_keeps_the_steps_every_run_reached():
    a = [(10, 0.5), (20, 0.7), (30, 0.8)]
    b = [(10, 0.6), (20, 0.9)]
    assert mean_curve([a, b]) == [(10, pytest.approx(0.55)), (20, pytest.approx(0.8))]
    assert mean_curve([]) == []


def test_steps_to_reach_is_the_first_step_at_or_above_the_target():
    curve = [(10, 0.5), (20, 0.7), (30, 0.69), (40, 0.8)]
    assert steps_to_reach(curve, 0.7) == 20
    assert steps_to_reach(curve, 0.8) == 40
    assert steps_to_reach(curve, 0.9) is None
