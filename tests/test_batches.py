"""Fixed train/eval subsets and the token cache: what a trial sees, and what a cache file may do."""

import collections
import csv
import pickle

import numpy as np
import pytest
from conftest import toy_rows

from sweep.data.batches import collate, encode_task, sample_indices
from sweep.data.tasks import load_task
from sweep.engine.models import load_tokenizer
from sweep.engine.train import run_trial


def test_stratified_sample_gives_each_class_its_share_in_the_original_order():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)  # sorted by label, as some files are
    idx = sample_indices(labels, 20, stratified=True)
    assert collections.Counter(labels[idx].tolist()) == {0: 12, 1: 6, 2: 2}
    assert np.all(np.diff(idx) > 0)
    # 7 = 4.2 + 2.1 + 0.7: the largest remainder, class 2's, gets the seventh example.
    assert collections.Counter(labels[sample_indices(labels, 7, True)].tolist()) == {0: 4, 1: 2, 2: 1}
    assert np.array_equal(idx, sample_indices(labels, 20, True))


def test_stratified_sample_is_within_one_example_of_each_class_share():
    rng = np.random.default_rng(3)
    labels = rng.choice(5, size=301, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    counts = np.bincount(labels)
    for n in range(1, 302, 7):
        got = np.bincount(labels[sample_indices(labels, n, True)], minlength=5)
        assert got.sum() == n and np.all(np.abs(got - n * counts / 301) < 1)


def test_regression_sample_is_seeded_random_not_the_head():
    labels = np.linspace(0.0, 5.0, 100)
    idx = sample_indices(labels, 10, stratified=False)
    assert len(set(idx.tolist())) == 10 and np.all(np.diff(idx) > 0)
    assert idx.tolist() != list(range(10))
    assert np.array_equal(idx, sample_indices(labels, 10, stratified=False))


@pytest.fixture
def label_sorted_csv(tmp_path) -> str:
    """80 training rows, all negatives first, then 20 validation rows: the head is one class."""
    rows = sorted(toy_rows(100, seed=1), key=lambda r: r[1])
    train, val = rows[10:90], rows[:10] + rows[90:]
    path = tmp_path / "sorted.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows([(t, y, "train") for t, y in train] + [(t, y, "validation") for t, y in val])
    return str(path)


def test_train_limit_samples_both_classes_of_a_label_sorted_file_whatever_the_trial_seed(
    tiny_cfg, label_sorted_csv
):
    cfg = tiny_cfg.replace(task=label_sorted_csv, train_limit=8, epochs=1)
    task = load_task(cfg.task)
    assert set(task.train.label[:8]) == {0}  # the first 8 would train on one class
    train, _ = encode_task(task, load_tokenizer(cfg), cfg.max_length)
    sample = train.sample(8, stratified=True)
    assert collections.Counter(sample.labels.tolist()) == {0: 4, 1: 4}
    assert int(train.lengths[:8].sum()) != int(sample.lengths.sum())  # tokens tell the two apart
    for seed in (0, 1, 2):
        r = run_trial(cfg.replace(seed=seed))
        assert r.examples == 8 and r.tokens == int(sample.lengths.sum())


class _Exploit:
    """Unpickling it creates the marker file, as a crafted cache file could run any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _same(a, b) -> bool:
    return (
        len(a) == len(b)
        and all(np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids, strict=True))
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.lengths, b.lengths)
        and (a.types is None) == (b.types is None)
    )


@pytest.fixture
def cached(tiny_cfg, tmp_path, monkeypatch):
    """(task, tokenizer, first encoding, cache file) with the cache in a fresh folder."""
    monkeypatch.setenv("LORAPLUS_SWEEP_CACHE", str(tmp_path / "cache"))
    task, tok = load_task(tiny_cfg.task), load_tokenizer(tiny_cfg)
    first = encode_task(task, tok, 32)
    (path,) = (tmp_path / "cache" / "tokens").iterdir()
    return task, tok, first, path


def test_the_cache_is_read_back_without_tokenizing_again(cached):
    task, tok, (train, evals), path = cached
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as z:
        assert z["splits"].tolist() == ["train", "validation"]
    written = path.stat().st_mtime_ns
    again_train, again_evals = encode_task(task, tok, 32)
    assert path.stat().st_mtime_ns == written
    assert _same(again_train, train) and list(again_evals) == ["validation"]
    assert _same(again_evals["validation"], evals["validation"])
    assert again_train.types is not None  # BERT's are stored too


@pytest.mark.parametrize("kind", ["pickle", "npz-with-a-pickled-array"])
def test_a_crafted_cache_file_never_runs_and_is_rebuilt(cached, tmp_path, kind):
    task, tok, (train, evals), path = cached
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Exploit(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()  # the payload is real
    if kind == "pickle":
        path.write_bytes(pickle.dumps(_Exploit(marker)))
    else:
        with path.open("wb") as f:
            np.savez(f, splits=np.array([_Exploit(marker)], dtype=object))
    again_train, again_evals = encode_task(task, tok, 32)
    assert not marker.exists()
    assert _same(again_train, train) and _same(again_evals["validation"], evals["validation"])
    with np.load(path, allow_pickle=False) as z:  # rebuilt as a proper cache file
        assert z["splits"].tolist() == ["train", "validation"]


def test_a_truncated_cache_file_is_rebuilt(cached):
    task, tok, (train, evals), path = cached
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again_train, again_evals = encode_task(task, tok, 32)
    assert _same(again_train, train) and _same(again_evals["validation"], evals["validation"])
    assert path.read_bytes() == data


def test_a_split_tokenized_in_chunks_equals_one_tokenized_at_once(tiny_cfg, tmp_path, monkeypatch):
    from sweep.data import batches

    monkeypatch.setenv("LORAPLUS_SWEEP_CACHE", str(tmp_path / "cache"))
    task, tok = load_task(tiny_cfg.task), load_tokenizer(tiny_cfg)
    monkeypatch.setattr(batches, "ENCODE_CHUNK", 7)  # chunks that end mid-split
    train, _ = encode_task(task, tok, 32)
    whole = tok(list(task.train.text), truncation=True, max_length=32)
    assert [x.tolist() for x in train.input_ids] == whole["input_ids"]
    taken = train.take(np.array([5, 0, 3]))
    assert [x.tolist() for x in taken.input_ids] == [whole["input_ids"][i] for i in (5, 0, 3)]
    # A batch: each row its example's ids then padding, the mask and the token types alike.
    idx = np.array([3, 1, 4])
    b = collate(train, idx, pad_id=0, regression=False)
    for row, i in enumerate(idx):
        n = len(whole["input_ids"][i])
        assert b["input_ids"][row, :n].tolist() == whole["input_ids"][i] and not b["input_ids"][row, n:].any()
        assert b["attention_mask"][row].tolist() == [1] * n + [0] * (b["input_ids"].shape[1] - n)
        assert b["token_type_ids"][row, :n].tolist() == whole["token_type_ids"][i]
    assert not list((tmp_path / "cache" / "tokens").glob("*.ids*"))  # the spill files are gone
