"""Metrics on hand-computed examples."""

import math

import pytest

from sweep import metrics


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
