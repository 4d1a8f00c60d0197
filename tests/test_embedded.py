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


def test_bbc_news_is_a_fixed_stratified_split_of_distinct_articles():
    task = load_task("bbc-news")
    # 2,225 files, of which 100 articles are stored twice.
    assert (len(task.train), len(task.validation)) == (1705, 420)
    assert task.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {0: 99, 1: 73, 2: 80, 3: 99, 4: 69}  # 503, 369, 403, 503, 347 articles in all
    texts = task.train.text + task.validation.text
    assert len(set(texts)) == len(texts) and all(texts)
    assert not set(task.train.text) & set(task.validation.text)
    assert any(t.startswith("Ad sales boost Time Warner profit Quarterly profits") for t in texts)
    assert any("Mutu, a £15.8m signing" in t for t in texts)  # the one cp1252 file
    assert load_task("bbc-news").fingerprint() == task.fingerprint()


def test_drug_reviews_is_a_fixed_stratified_split_of_distinct_reviews():
    task = load_task("drug-reviews")
    # 979 reviews, one posted twice (under two names of the same implant).
    assert (len(task.train), len(task.validation)) == (782, 196)
    assert task.label_names == ("negative", "neutral", "positive") and task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {0: 51, 1: 18, 2: 127}  # 256, 90, 632 reviews in all
    texts = task.train.text + task.validation.text
    assert len(set(texts)) == len(texts) and all(texts)
    assert not set(task.train.text) & set(task.validation.text)
    # Unescaped, and only the quotes wrapping each review removed.
    assert not any("&#039;" in t or t.startswith('"') for t in texts)
    assert any(t.endswith('What a wonderful "side-effect"') for t in texts)
    assert load_task("drug-reviews").fingerprint() == task.fingerprint()


@pytest.mark.slow
def test_minilm_learns_rotten_tomatoes_above_the_majority_baseline():
    cfg = TrialConfig(eta_a=2e-3, lam=8.0, train_limit=2048, eval_limit=500, epochs=1, device="cpu")
    r = run_trial(cfg)
    task = load_task(cfg.task)
    majority = max(collections.Counter(task.validation.label[:500]).values()) / 500
    assert r.stop_reason == "completed"
    assert r.metric > majority + 0.1, (r.metric, majority)
