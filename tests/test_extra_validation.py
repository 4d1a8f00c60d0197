"""Extra evaluation splits (MNLI mismatched): evaluated with the main one, reported after it."""

import dataclasses

import pytest

from sweep.core.metrics import compute_splits
from sweep.data.tasks import Split, load_task
from sweep.engine.train import run_trial


def test_main_split_metrics_come_first_under_their_own_names():
    preds = {"mismatched": [1, 1, 0, 0], "validation": [1, 0, 1, 1]}
    golds = {"mismatched": [1, 0, 0, 0], "validation": [1, 0, 0, 1]}
    out = compute_splits(("accuracy", "f1"), preds, golds)
    assert list(out) == ["accuracy", "f1", "accuracy_mismatched", "f1_mismatched"]
    assert out["accuracy"] == 0.75 and out["f1"] == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    assert out["accuracy_mismatched"] == 0.75 and out["f1_mismatched"] == pytest.approx(2 / 3)


def _with_extra(task_path: str):
    """The toy task plus a split of 64 copies of one text, 62 labelled 0 and 2 labelled 1.

    Whatever the model, it predicts one class for all of them: accuracy 62/64 or 2/64 on the whole
    split, and exactly 1 or 0 on a stratified sample of 3 (which holds three 0s).
    """
    task = load_task(task_path)
    extra = Split(("the film was a film",) * 64, None, (0,) * 62 + (1,) * 2)
    return dataclasses.replace(task, extra_validation={"mismatched": extra})


def test_a_trial_reports_the_extra_split_after_the_main_metric(tiny_cfg):
    task = _with_extra(tiny_cfg.task)
    r = run_trial(tiny_cfg.replace(max_steps=4, eval_every=2), task=task)
    assert list(r.metrics) == ["accuracy", "f1", "accuracy_mismatched", "f1_mismatched"]
    assert r.metric_name == "accuracy" and r.metric == r.metrics["accuracy"]
    assert r.metrics["accuracy_mismatched"] in (62 / 64, 2 / 64)
    assert [list(p.metrics) for p in r.history] == [list(r.metrics)] * 2


def test_eval_limit_applies_to_every_evaluation_split(tiny_cfg):
    r = run_trial(tiny_cfg.replace(max_steps=2, eval_limit=3), task=_with_extra(tiny_cfg.task))
    assert r.metrics["accuracy_mismatched"] in (0.0, 1.0)
    assert r.metrics["accuracy"] * 3 == pytest.approx(round(r.metrics["accuracy"] * 3))


def test_a_diverged_trial_scores_every_split_at_its_worst(tiny_cfg):
    cfg = tiny_cfg.replace(eta_a=50.0, lam=64.0, max_grad_norm=None, warmup_ratio=0.0)
    r = run_trial(cfg, task=_with_extra(tiny_cfg.task))
    assert r.diverged
    assert r.metrics == {"accuracy": 0.0, "f1": 0.0, "accuracy_mismatched": 0.0, "f1_mismatched": 0.0}
