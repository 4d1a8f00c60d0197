"""The embedded offline default: a real pretrained encoder on a real labelled task, no network."""

import collections
import time

import numpy as np
import pytest

from sweep.data import embedded
from sweep.data.batches import sample_indices
from sweep.data.config import TrialConfig
from sweep.data.embedded import near_duplicate_pairs, near_duplicates, shingle_matrix
from sweep.data.tasks import load_task
from sweep.engine.train import run_trial


def disjoint(task) -> bool:
    return not (set(task.train.text) & set(task.validation.text) or set(task.train.text) & set(task.test.text)
                or set(task.validation.text) & set(task.test.text))


def test_rotten_tomatoes_is_a_fixed_stratified_split_of_real_snippets():
    task = load_task("rotten-tomatoes")
    # 12,752 distinct snippets, of which 4 differ from another only in case or punctuation. A test split
    # of the validation split's size (held out for confirm) came out of train, which had 10,748.
    assert (len(task.train), len(task.validation), len(task.test)) == (8748, 2000, 2000)
    assert task.label_names == ("rotten", "fresh") and task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {1: 1156, 0: 844}  # 57.8 % fresh, as in the whole set
    assert collections.Counter(task.test.label) == counts and disjoint(task)
    assert load_task("rotten-tomatoes").fingerprint() == task.fingerprint()


def test_bbc_news_is_a_fixed_stratified_split_of_distinct_articles():
    task = load_task("bbc-news")
    # 2,225 files: 100 articles are stored twice, and 57 more have a near-duplicate. The test split, of
    # the validation split's size, came out of train (1,654 before).
    assert (len(task.train), len(task.validation), len(task.test)) == (1240, 414, 414)
    assert task.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {0: 100, 1: 72, 2: 79, 3: 98, 4: 65}  # 500, 362, 393, 489, 324 articles in all
    assert collections.Counter(task.test.label) == counts
    texts = [*task.train.text, *task.validation.text, *task.test.text]
    assert len(set(texts)) == len(texts) and all(texts) and disjoint(task)
    assert any(t.startswith("Ad sales boost Time Warner profit Quarterly profits") for t in texts)
    assert any("Mutu, a £15.8m signing" in t for t in texts)  # the one cp1252 file
    # Of a near-duplicate pair the first file is kept.
    assert sum(t.startswith("Nasdaq planning $100m share sale") for t in texts) == 1
    assert not any(t.startswith("Nasdaq planning $100m-share sale") for t in texts)
    assert load_task("bbc-news").fingerprint() == task.fingerprint()


def test_drug_reviews_is_a_fixed_stratified_split_of_distinct_reviews():
    task = load_task("drug-reviews")
    # 979 reviews, one posted twice (under two names of the same implant). The test split, of the
    # validation split's size, came out of train (782 before).
    assert (len(task.train), len(task.validation), len(task.test)) == (586, 196, 196)
    assert task.label_names == ("negative", "neutral", "positive") and task.main_metric == "accuracy"
    counts = collections.Counter(task.validation.label)
    assert counts == {0: 51, 1: 18, 2: 127}  # 256, 90, 632 reviews in all
    assert collections.Counter(task.test.label) == counts
    texts = [*task.train.text, *task.validation.text, *task.test.text]
    assert len(set(texts)) == len(texts) and all(texts) and disjoint(task)
    # Unescaped, and only the quotes wrapping each review removed.
    assert not any("&#039;" in t or t.startswith('"') for t in texts)
    assert any(t.endswith('What a wonderful "side-effect"') for t in texts)
    assert load_task("drug-reviews").fingerprint() == task.fingerprint()


@pytest.mark.slow
def test_minilm_learns_rotten_tomatoes_above_the_majority_baseline():
    cfg = TrialConfig(eta_a=2e-3, lam=8.0, train_limit=2048, eval_limit=500, epochs=1, device="cpu")
    r = run_trial(cfg)
    task = load_task(cfg.task)
    sampled = np.asarray(task.validation.label)[sample_indices(np.asarray(task.validation.label), 500, True)]
    majority = max(collections.Counter(sampled.tolist()).values()) / 500
    assert r.stop_reason == "completed"
    assert r.metric > majority + 0.1, (r.metric, majority)


# Word 5-grams of these: 30 words give 26, so changing the last word keeps 25 of them (Jaccard
# 25/27) and changing the middle one keeps 21 (21/31).
BASE = " ".join(f"w{i}" for i in range(30))
LAST = BASE.replace("w29", "z29")
MIDDLE = BASE.replace("w15", "z15")
OTHER = " ".join(f"v{i}" for i in range(30))


def test_shingles_are_distinct_word_ngrams_of_lower_cased_words():
    x = shingle_matrix(["A b, c d e f", "a b c d e", "a b c d e a b c d e", "x y", "X Y!", ""], n=5)
    assert x.getnnz(axis=1).tolist() == [2, 1, 5, 1, 1, 1]  # a short text is one shingle, itself
    assert (x[0] @ x[1].T).toarray()[0, 0] == 1 and (x[3] @ x[4].T).toarray()[0, 0] == 1
    assert (x[3] @ x[5].T).toarray()[0, 0] == 0 and x.max() == 1


def test_near_duplicate_pairs_have_the_jaccard_of_their_shingle_sets():
    i, j, jaccard = near_duplicate_pairs([BASE, OTHER, MIDDLE, LAST], threshold=0.8)
    assert (i.tolist(), j.tolist()) == ([0], [3]) and jaccard == pytest.approx([25 / 27])
    i, j, jaccard = near_duplicate_pairs([BASE, OTHER, MIDDLE, LAST], threshold=0.6)
    # MIDDLE and LAST differ in two places: 26 - 5 - 1 = 20 shared of 32.
    assert sorted(zip(i.tolist(), j.tolist(), jaccard.round(4).tolist(), strict=True)) == [
        (0, 2, round(21 / 31, 4)), (0, 3, round(25 / 27, 4)), (2, 3, round(20 / 32, 4))
    ]


def test_near_duplicates_keep_the_first_of_a_cluster_and_drop_a_mixed_label_one():
    texts = [LAST, OTHER, BASE, OTHER.replace("v29", "u29"), "short and unique"]
    drop = near_duplicates(texts, ["a", "b", "a", "c", "a"])
    # LAST and BASE share a label: the first stays. The OTHER pair disagrees: neither is trusted.
    assert drop.tolist() == [False, True, True, True, False]
    # Clusters are transitive: at 0.65 MIDDLE ~ BASE ~ LAST, though MIDDLE and LAST are only 0.625 alike.
    assert near_duplicates([MIDDLE, LAST, BASE], ["a"] * 3, threshold=0.65).tolist() == [False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(embedded.TASKS))
def test_no_validation_text_has_a_near_duplicate_in_train(name):
    spec = embedded.TASKS[name]
    df = spec.read(embedded.data_path(spec))
    started = time.perf_counter()
    near_duplicates(df["text"].tolist(), df["label"].tolist())
    assert time.perf_counter() - started < 10  # about a second for BBC News's 2,125 articles
    task = load_task(name)
    texts = [*task.train.text, *task.validation.text, *task.test.text]
    i, j, _ = near_duplicate_pairs(texts)
    assert len(i) == 0  # none at all, so none across the split whatever the label
