"""confirm's statistics on fixed numbers with known answers."""

import math

import pytest

from sweep.stats import mean_curve, paired, steps_to_reach

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
    p = paired([0.9, 0.8], [0.8, 0.7])
    assert p.ci_low == pytest.approx(0.1) == p.ci_high and p.significant and p.p_value == 0.0
    tie = paired([0.5, 0.6], [0.5, 0.6])
    assert not tie.significant and tie.p_value == 1.0


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
