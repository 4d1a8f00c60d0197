"""Metrics on hand-computed examples."""

import math

import numpy as np
import pytest

from sweep.core import metrics


def test_accuracy_and_binary_f1():
    pred, gold = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.accuracy(pred, gold) == pytest.approx(3 / 5)
    # tp = 2, fp = 1, fn = 1 -> F1 = 2*2 / (3 + 3)
    assert metrics.f1(pred, gold) == pytest.approx(4 / 6)


def test_matthews_binary_matches_the_closed_form():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews(pred, gold) == pytest.approx(expected)
    assert metrics.matthews([0, 0, 0], [0, 1, 0]) == 0.0  # constant prediction


def test_macro_f1_averages_classes():
    pred, gold = [0, 1, 2, 2], [0, 1, 1, 2]
    # class 0: 1, class 1: 2*1/(1+2), class 2: 2*1/(2+1)
    assert metrics.macro_f1(pred, gold) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_pearson_and_spearman_with_ties():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    # ranks [1.5, 1.5, 3] vs [1, 2, 3]
    assert metrics.spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(0.8660254, rel=1e-6)


def test_nan_predictions_score_worst():
    out = metrics.compute(("accuracy", "pearson"), [float("nan")] * 3, [0, 1, 0])
    assert out == {"accuracy": 0.0, "pearson": -1.0}


def test_bootstrap_standard_error_matches_the_binomial_for_accuracy_and_is_seeded():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 800)
    pred = np.where(rng.random(800) < 0.8, gold, 1 - gold)
    p = metrics.accuracy(pred, gold)
    se = metrics.bootstrap_se("accuracy", pred, gold)
    assert se == pytest.approx(math.sqrt(p * (1 - p) / 800), rel=0.1)
    assert se == metrics.bootstrap_se("accuracy", pred, gold)  # seeded: the same record every time
    # Four times the examples, half the spread; every metric has one.
    quadruple = metrics.bootstrap_se("accuracy", np.tile(pred, 4), np.tile(gold, 4))
    assert quadruple == pytest.approx(se / 2, rel=0.15)
    for name in ("f1", "macro_f1", "matthews"):
        assert 0 < metrics.bootstrap_se(name, pred, gold) < 0.1


def test_bootstrap_standard_error_is_nan_where_nothing_was_measured():
    assert math.isnan(metrics.bootstrap_se("accuracy", [1.0, float("nan")], [1, 0]))
    assert math.isnan(metrics.bootstrap_se("pearson", [0.5], [0.4]))
