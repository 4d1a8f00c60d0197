"""The embedded offline default: a real pretrained encoder on a real labelled task, no network."""

import collections

import pytest

from sweep.config import TrialConfig
from sweep.tasks import load_task
from sweep.train import run_trial


def test_rotten_tomatoes_is_a_fixed_stratified_split_of_real_snippets():
    task = load_task("rotten-tomatoes")
    assert (len(task.train), len(task.validation)) == (10752, 2000)
    assert task.label_names == ("rotten", "fresh") and task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {1: 1156, 0: 844}  # 57.8 % fresh, as in the whole set
    assert not set(task.train.text) & set(task.validation.text)
    assert load_task("rotten-tomatoes").fingerprint() == task.fingerprint()


@pytest.mark.slow
def test_minilm_learns_rotten_tomatoes_above_the_majority_baseline():
    cfg = TrialConfig(eta_a=2e-3, lam=8.0, train_limit=2048, eval_limit=500, epochs=1, device="cpu")
    r = run_trial(cfg)
    task = load_task(cfg.task)
    majority = max(collections.Counter(task.validation.label[:500]).values()) / 500
    assert r.stop_reason == "completed"
    assert r.metric > majority + 0.1, (r.metric, majority)
