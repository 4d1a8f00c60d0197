"""Task loading: local files with auto-detected columns, label mapping, splits, errors."""

import dataclasses
import json

import pandas as pd
import pytest

from sweep.core.errors import SweepError
from sweep.data import tasks


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_with_string_labels_maps_them_in_sorted_order(toy_csv):
    task = tasks.load_task(toy_csv)
    assert task.label_names == ("neg", "pos")
    assert len(task.train) + len(task.validation) == 320
    assert len(task.validation) == 64  # 20 %, stratified: 32 of each class
    assert sorted(task.validation.label) == [0] * 32 + [1] * 32
    assert task.metrics == ("accuracy", "f1") and task.main_metric == "accuracy"
    assert task.train.pair is None


def test_split_is_fixed_whatever_the_trial(toy_csv):
    a, b = tasks.load_task(toy_csv), tasks.load_task(toy_csv)
    assert a.validation == b.validation and a.fingerprint() == b.fingerprint()


def test_jsonl_text_pair_is_detected_and_integer_labels_kept(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(30)]
    path = write(tmp_path / "nli.jsonl", "\n".join(json.dumps(r) for r in rows))
    task = tasks.load_task(path)
    assert task.train.pair is not None and task.label_names == ("0", "1", "2")
    assert task.main_metric == "accuracy" and task.metrics[1] == "macro_f1"
    split = task.train if "p4" in task.train.text else task.validation
    i = split.text.index("p4")
    assert split.pair[i] == "h4" and split.label[i] == 1


def test_split_column_and_overrides(tmp_path):
    path = write(
        tmp_path / "reviews.tsv",
        "body\tstars\tsplit\ngreat\t5\ttrain\nbad\t1\ttrain\nok\t3\tvalidation\nfine\t5\tvalidation\n",
    )
    task = tasks.load_task(path, tasks.Columns(text="body", label="stars"))
    assert task.train.text == ("great", "bad") and task.validation.text == ("ok", "fine")
    assert task.label_names == ("1", "3", "5") and list(task.validation.label) == [1, 2]


def test_float_labels_make_a_regression_task(tmp_path):
    lines = ["sentence1,sentence2,score"] + [f"a{i},b{i},{i / 7:.3f}" for i in range(20)]
    task = tasks.load_task(write(tmp_path / "sts.csv", "\n".join(lines)))
    assert task.is_regression and task.num_labels == 1 and task.main_metric == "pearson"
    assert task.train.pair is not None


def test_missing_column_names_the_columns_and_the_flag(tmp_path):
    path = write(tmp_path / "x.csv", "body,label\nhi,1\n")
    with pytest.raises(SweepError, match=r"no text column found in x.csv \(columns: 'body', 'label'\); "
                                         "name it with --text-column"):
        tasks.load_task(path)
    with pytest.raises(SweepError, match="label column 'stars' not in x.csv"):
        tasks.load_task(path, tasks.Columns(text="body", label="stars"))


def test_unknown_task_lists_the_choices():
    with pytest.raises(SweepError, match="unknown task 'qqq': use one of .*qqp.*sst2"):
        tasks.load_task("qqq")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="does not exist"):
        tasks.load_task(str(tmp_path / "nope.csv"))


def test_glue_offline_and_uncached_fails_in_one_line(monkeypatch, tmp_path):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(tasks, "hub_reachable", lambda: False)
    with pytest.raises(SweepError, match="could not load GLUE task 'rte'.*unreachable") as e:
        tasks.load_task("rte")
    assert "\n" not in str(e.value)


def _nli(rows: list[tuple[str, str, int]]):
    import datasets

    features = datasets.Features({
        "premise": datasets.Value("string"),
        "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
    })
    premise, hypothesis, label = zip(*rows, strict=True)
    columns = {"premise": list(premise), "hypothesis": list(hypothesis), "label": list(label)}
    return datasets.Dataset.from_dict(columns, features=features)


def test_mnli_tests_on_both_official_sets_and_selects_on_a_split_carved_from_train(monkeypatch):
    datasets = pytest.importorskip("datasets")
    # 10 entailment, 5 neutral, 5 contradiction training pairs; 4 matched validation pairs: the
    # validation split takes 4 of train, 2, 1 and 1 of each class.
    train = [(f"p{i}", f"h{i}", 0 if i < 10 else 1 if i < 15 else 2) for i in range(20)]
    glue = datasets.DatasetDict({
        "train": _nli(train),
        "validation_matched": _nli([("she sang", "she was silent", 2), ("we ate", "we had food", 0),
                                    ("it rained", "it was wet", 0), ("he ran", "he sat", 1)]),
        "validation_mismatched": _nli([("the letter came", "mail arrived", 0), ("prices rose", "a fall", 1),
                                       ("a dog barked", "a noise", 0)]),
        "test_matched": _nli([("x", "y", 0)]),
    })
    asked = []
    monkeypatch.setattr(tasks, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a) or glue)
    task = tasks.load_task("mnli")
    assert asked == [("nyu-mll/glue", "mnli")]
    assert task.metrics == ("accuracy",) and task.label_names == ("entailment", "neutral", "contradiction")
    # The official matched set is the test split, the mismatched one an extra test split.
    assert task.test.text == ("she sang", "we ate", "it rained", "he ran")
    assert list(task.test.label) == [2, 0, 0, 1]
    extra = task.extra_test["mismatched"]
    assert extra.text == ("the letter came", "prices rose", "a dog barked")
    assert extra.pair == ("mail arrived", "a fall", "a noise") and list(extra.label) == [0, 1, 0]
    assert list(task.evaluated("test")) == ["validation", "mismatched"]
    # What a search selects on comes out of train: stratified, disjoint from it, the same every time.
    assert list(task.evaluation_splits) == ["validation"] and not task.extra_validation
    assert sorted(task.validation.label) == [0, 0, 1, 2] and len(task.train) == 16
    assert not set(task.validation.text) & set(task.train.text)
    assert set(task.validation.text) | set(task.train.text) == {p for p, _, _ in train}
    assert {task.validation.pair[task.validation.text.index(p)] for p in task.validation.text} == {
        h for p, h, _ in train if p in task.validation.text}
    assert tasks.load_task("mnli").validation == task.validation
    assert tasks.task_summary(task)["test_mismatched_examples"] == 3
    # The test splits are part of the content a token cache and a study's name are keyed on.
    without = dataclasses.replace(task, extra_test={})
    assert without.fingerprint() != task.fingerprint()
    assert dataclasses.replace(task, test=task.validation).fingerprint() != task.fingerprint()


def test_glue_splits_carve_validation_from_train_and_keep_the_official_sets_as_tests():
    # A regression task (STS-B): a seeded random validation split as large as the test split.
    labels = pd.Series([i / 3 for i in range(10)])
    rest, validation = tasks.glue_splits(labels, 2)
    assert len(validation) == 2 and len(rest) == 8
    assert sorted([*rest, *validation]) == list(range(10))
    assert tasks.glue_splits(labels, 2)[1].tolist() == validation.tolist()
    # Classes: each keeps its share of train in the validation split.
    labels = pd.Series([i % 4 == 0 for i in range(40)])
    rest, validation = tasks.glue_splits(labels, 8)
    assert labels.iloc[validation].value_counts().to_dict() == {False: 6, True: 2} and len(rest) == 32


def test_a_split_column_may_hold_test_rows_that_only_a_test_evaluation_sees(tmp_path):
    names = ("train", "validation", "test")
    lines = ["text,label,split"] + [f"a{i},{i % 2},{names[i % 3]}" for i in range(30)]
    task = tasks.load_task(write(tmp_path / "three.csv", "\n".join(lines)))
    assert (len(task.train), len(task.validation), len(task.test)) == (10, 10, 10)
    assert set(task.test.text) == {f"a{i}" for i in range(2, 30, 3)}
    assert task.evaluated("test")["validation"] is task.test
    assert task.evaluation_splits["validation"] is task.validation
    assert tasks.task_summary(task)["test_examples"] == 10
    # Without test rows, or without a split column, there is no test split, and asking for one says so.
    lines = [line for line in lines if not line.endswith(",test")]
    two = tasks.load_task(write(tmp_path / "two.csv", "\n".join(lines)))
    plain = tasks.load_task(write(tmp_path / "no.csv", "text,label\na,0\nb,1\nc,0\nd,1\n"))
    assert two.test is None and plain.test is None
    with pytest.raises(SweepError, match="task two has no test split: give its file a `split` column"):
        two.evaluated("test")


def test_extra_split_names_must_not_shadow_the_main_ones(toy_csv):
    task = tasks.load_task(toy_csv)
    for name in ("validation", "train", "Mis matched", ""):
        with pytest.raises(ValueError, match="extra validation split name"):
            dataclasses.replace(task, extra_validation={name: task.validation})
