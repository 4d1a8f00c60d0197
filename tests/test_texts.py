"""A task's texts held once: splits are views of one Arrow column, read back a slice at a time, and
the task's fingerprint (part of a study's name) is the same as it was when splits were tuples."""

import hashlib
import json

import numpy as np
import pandas as pd

from sweep.core import texts
from sweep.core.texts import Texts
from sweep.data import tasks


def old_fingerprint(task: tasks.TaskData) -> str:
    """The fingerprint as it was computed over tuples of Python strings and labels."""
    h = hashlib.sha256()

    def dump(*items):
        plain = [list(i) if isinstance(i, Texts) else i.tolist() if isinstance(i, np.ndarray) else i
                 for i in items]
        h.update(json.dumps(plain).encode())

    for split in (task.train, task.validation):
        dump(split.text, split.pair, split.label)
    for name, split in {"validation": task.test, **task.extra_test}.items():
        if split is not None:
            dump("test", name, split.text, split.pair, split.label)
    return h.hexdigest()[:16]


def test_texts_slice_iterate_compare_and_view():
    t = Texts.of(["a", "bb", "é", "", "dd"])
    assert len(t) == 5 and t[2] == "é" and t[-1] == "dd" and t[1:3] == ["bb", "é"]
    assert list(t) == ["a", "bb", "é", "", "dd"] and t == ("a", "bb", "é", "", "dd") and t != ["a"]
    v = t.view(np.array([4, 0]))
    assert list(v) == ["dd", "a"] and v.view(np.array([1]))[0] == "a"


def test_missing_and_numeric_texts_become_strings():
    col = Texts.column(pd.Series(["x", None, "z"], dtype="str"))
    assert list(col) == ["x", "", "z"]
    assert list(Texts.column(pd.Series([1.5, 2.0]))) == ["1.5", "2.0"]
    assert list(Texts.column(pd.Series(["a", 3, None], dtype=object))) == ["a", "3", ""]


def test_every_split_is_a_view_of_one_column_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(texts, "CHUNK", 7)  # streamed hashing across many chunks
    rng = np.random.default_rng(0)
    words = np.array(["good", "bad", "film", "plot", "actor", "dull", "great", "long"])
    n = 2_000
    rows = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(n)]
    pairs = [r[::-1] for r in rows]
    split = np.where(np.arange(n) % 10 == 0, "test", np.where(np.arange(n) % 10 == 1, "validation", "train"))
    df = pd.DataFrame({"sentence1": rows, "sentence2": pairs, "label": rng.integers(0, 3, n), "split": split})
    path = tmp_path / "pairs.csv"
    df.to_csv(path, index=False)
    task = tasks.load_task(str(path))
    column = task.train.text._column
    assert task.validation.text._column is column and task.test.text._column is column
    assert task.train.pair._column is task.test.pair._column
    assert column.nbytes < 1.1 * sum(len(r) for r in rows) + 8 * n  # the text once, and its offsets
    assert (len(task.train), len(task.validation), len(task.test)) == (1600, 200, 200)
    assert list(task.test.text) == rows[::10] and list(task.test.pair) == pairs[::10]
    assert task.fingerprint() == old_fingerprint(task)


def test_fingerprint_of_a_regression_file_and_an_embedded_task_is_unchanged(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("text\tscore\n" + "".join(f"t{i}\t{i / 7:.3f}\n" for i in range(50)))
    task = tasks.load_task(str(path))
    assert task.label_names is None and task.train.label.dtype == np.float64
    assert task.fingerprint() == old_fingerprint(task)
    news = tasks.load_task("bbc-news")
    assert news.fingerprint() == old_fingerprint(news) == "b611f98606337aa1"
