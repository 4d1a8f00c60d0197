"""Task registry: GLUE from `datasets`, local CSV/TSV/JSONL files, and the embedded offline tasks.

One place decides each task's text columns, splits and metrics (main metric first). A study selects on
the validation split; the test split, where a task has one, is held out for `confirm`'s final numbers:
- embedded tasks: a fixed, seeded, stratified three-way split, validation and test of one size;
- GLUE: the official validation set is the test (MNLI: matched, and mismatched as an extra test
  split), and the validation split is carved out of the official train (seeded, stratified, as many
  examples as the test);
- a file: its `split` column's train, validation and test rows; without one, a seeded stratified
  80/20 train/validation split and no test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import pandas as pd

from sweep.core.errors import SweepError
from sweep.core.hub import hub_reachable
from sweep.core.metrics import MAIN_SPLIT
from sweep.core.schema import short
from sweep.core.texts import Texts, hash_json
from sweep.data import embedded


@dataclass(frozen=True, eq=False)
class Split:
    """One split's rows. The texts are views into the task's one copy of its text columns; sequences
    of str given here are copied into such a column."""

    text: Texts
    pair: Texts | None
    label: np.ndarray  # class ids (int64) for classification, float64 for regression

    def __post_init__(self) -> None:
        for name in ("text", "pair"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Texts):
                object.__setattr__(self, name, Texts.of(value))
        label = np.asarray(self.label)
        object.__setattr__(self, "label", label if label.dtype.kind == "f" else label.astype(np.int64))

    def __len__(self) -> int:
        return len(self.text)

    def take(self, rows: np.ndarray) -> Split:
        """The rows at positions `rows`, sharing this split's text columns."""
        pair = None if self.pair is None else self.pair.view(rows)
        return Split(self.text.view(rows), pair, self.label[rows])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split) or not np.array_equal(self.label, other.label):
            return False
        pairs = self.pair == other.pair if self.pair is not None else other.pair is None
        return pairs and self.text == other.text

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class TaskData:
    name: str
    train: Split
    validation: Split
    label_names: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]  # the first is the task's main metric
    # Evaluated too, each metric reported as `<metric>_<split name>` (MNLI: accuracy_mismatched).
    extra_validation: dict[str, Split] = field(default_factory=dict)
    test: Split | None = None  # held out from every search; None: the task has no test split
    extra_test: dict[str, Split] = field(default_factory=dict)  # evaluated with the test split

    def __post_init__(self) -> None:
        for name in (*self.extra_validation, *self.extra_test):
            if not re.fullmatch(r"[a-z0-9_]+", name) or name in ("train", MAIN_SPLIT):
                raise ValueError(f"bad extra validation split name {name!r}")

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def evaluation_splits(self) -> dict[str, Split]:
        """Every split evaluated, by name: the main validation split first."""
        return self.evaluated(MAIN_SPLIT)

    def evaluated(self, split: str) -> dict[str, Split]:
        """The splits a trial evaluating on `split` (validation or test) scores, the main one first
        under MAIN_SPLIT's name (its metrics keep their own names, whichever split it is)."""
        if split == "test":
            if self.test is None:
                raise SweepError(no_test_split(self.name))
            return {MAIN_SPLIT: self.test, **self.extra_test}
        return {MAIN_SPLIT: self.validation, **self.extra_validation}

    def fingerprint(self) -> str:
        """Hash of the content, so a tokenization cache can never serve stale data, and a changed
        split (of any of train, validation and test) makes another study. Computed once per task
        (a slot's process asks for it at every trial)."""
        known = self.__dict__.get("_fingerprint")
        if known is None:
            known = self._hash()
            object.__setattr__(self, "_fingerprint", known)
        return known

    def _hash(self) -> str:
        h = hashlib.sha256()  # of the JSON of each split's (texts, pairs, labels), streamed
        for split in (self.train, self.validation):
            hash_json(h, [split.text, split.pair, split.label])
        for name, split in self.extra_validation.items():
            hash_json(h, [name, split.text, split.pair, split.label])
        # Only where there is one: a task without a test split keeps the fingerprint it always had.
        tests = {**({MAIN_SPLIT: self.test} if self.test is not None else {}), **self.extra_test}
        for name, split in tests.items():
            hash_json(h, ["test", name, split.text, split.pair, split.label])
        return h.hexdigest()[:16]


def no_test_split(task: str) -> str:
    return (f"task {task} has no test split: give its file a `split` column with test rows, or score "
            "the validation split (confirm --split validation)")


@dataclass(frozen=True)
class GlueSpec:
    text: str
    pair: str | None
    metrics: tuple[str, ...]
    validation: str = "validation"  # the official validation set: the task's test split
    regression: bool = False
    extra_validation: tuple[tuple[str, str], ...] = ()  # (name, dataset split): extra test splits


GLUE: dict[str, GlueSpec] = {
    "sst2": GlueSpec("sentence", None, ("accuracy",)),
    "mrpc": GlueSpec("sentence1", "sentence2", ("accuracy", "f1")),
    "qqp": GlueSpec("question1", "question2", ("accuracy", "f1")),
    "qnli": GlueSpec("question", "sentence", ("accuracy",)),
    "rte": GlueSpec("sentence1", "sentence2", ("accuracy",)),
    "mnli": GlueSpec("premise", "hypothesis", ("accuracy",), validation="validation_matched",
                     extra_validation=(("mismatched", "validation_mismatched"),)),
    "cola": GlueSpec("sentence", None, ("matthews", "accuracy")),
    "stsb": GlueSpec("sentence1", "sentence2", ("pearson", "spearman"), regression=True),
}

LOCAL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# First columns that start a pair (so "question" wins over "sentence" in question/sentence files).
TEXT_COLUMNS = ("sentence1", "question1", "question", "premise", "text_a", "text", "sentence",
                "review", "content", "document")
PAIR_COLUMNS = {
    "sentence1": "sentence2",
    "question1": "question2",
    "question": "sentence",
    "premise": "hypothesis",
    "text_a": "text_b",
    "text": "text_pair",
}
LABEL_COLUMNS = ("label", "labels", "target", "class", "category", "y", "score")
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so every trial on every machine sees the same validation and test sets
TEST_NAMES = ("test",)  # values of a file's `split` column that mark test rows
# A file's `split` values (any case, surrounding space ignored): 0 train, 1 validation, 2 test.
SPLIT_NAMES = {"train": 0, "validation": 1, "dev": 1, "val": 1, **{name: 2 for name in TEST_NAMES}}


def task_names() -> list[str]:
    return sorted(GLUE) + sorted(embedded.TASKS)


class Columns(NamedTuple):
    """The columns of a local task file; None: found under their usual names."""

    text: str | None = None
    text_pair: str | None = None
    label: str | None = None


def load_task(task: str, columns: Columns = Columns()) -> TaskData:
    """Load a task by name (GLUE or embedded) or from a local CSV/TSV/JSONL file."""
    if Path(task).suffix.lower() in LOCAL_SUFFIXES:
        return load_local(Path(task), columns)
    if task in embedded.TASKS:
        df, spec = embedded.load(task)
        # Validation and test each take validation_size (per class alike): the validation rows are
        # those of the earlier two-way split, and the test rows come out of what was train.
        fraction = spec.validation_size / len(df)
        parts = _three_way_split(df["label"], fraction, fraction)
        return _task(task, Texts.column(df["text"]), None, df["label"], parts, spec.label_names)
    if task in GLUE:
        return _load_glue(task)
    raise SweepError(
        f"unknown task {task!r}: use one of {', '.join(task_names())} or a .csv/.tsv/.jsonl file"
    )


def _load_glue(name: str) -> TaskData:
    spec = GLUE[name]
    try:
        import datasets
    except ImportError as e:
        raise SweepError(f"GLUE task {name!r} needs the `datasets` package: pip install datasets") from e
    online = hub_reachable()
    try:
        # Offline, read only the local cache instead of retrying the Hub for a minute.
        with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", not online):
            ds = datasets.load_dataset("nyu-mll/glue", name)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        where = "the Hub is unreachable and it is not in the datasets cache" if not online else str(e)
        raise SweepError(
            f"could not load GLUE task {name!r} (nyu-mll/glue): {where}; connect once to cache it, "
            "or pass a local file with --task path.csv"
        ) from e
    label_names = None if spec.regression else tuple(ds["train"].features["label"].names)
    dtype = np.float64 if spec.regression else np.int64

    def split(key: str) -> Split:
        """A split of the dataset, its texts the dataset's own Arrow columns (memory-mapped)."""
        d = ds[key].with_format("arrow")
        pair = None if spec.pair is None else Texts(d[spec.pair])
        return Split(Texts(d[spec.text]), pair, np.asarray(d["label"].to_numpy(), dtype=dtype))

    tests = {MAIN_SPLIT: split(spec.validation), **{n: split(k) for n, k in spec.extra_validation}}
    train = split("train")
    rest, validation = glue_splits(pd.Series(train.label), len(tests[MAIN_SPLIT]))
    extra = {n: s for n, s in tests.items() if n != MAIN_SPLIT}
    return TaskData(name, train.take(rest), train.take(validation), label_names, spec.metrics,
                    test=tests[MAIN_SPLIT], extra_test=extra)


def glue_splits(train_labels: pd.Series, n_validation: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row positions of a GLUE task's official train set, given its labels. The
    official validation sets are the test splits, never seen by a search; the validation split a
    search selects on is carved out of the official train, seeded and stratified (by label; a
    regression task's at random), as large as the main test split. GLUE's own test sets carry no
    labels."""
    rest, validation, _ = _three_way_split(train_labels, n_validation / len(train_labels), 0.0)
    return rest, validation


def _read_table(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise SweepError(f"task file {str(path)!r} is a directory, not a .csv/.tsv/.jsonl file")
    if not path.is_file():
        raise SweepError(f"task file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SweepError(f"could not read task file {str(path)!r}: {str(e).splitlines()[0]}") from e


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise SweepError(
                f"{what} column {wanted!r} not in {path.name} (columns: {', '.join(map(repr, columns))})"
            )
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    flag = "--label-column" if what == "label" else "--text-column"
    raise SweepError(
        f"no {what} column found in {path.name} (columns: {', '.join(map(repr, columns))}); "
        f"name it with {flag}"
    )


def load_local(path: Path, named: Columns = Columns()) -> TaskData:
    """A CSV/TSV/JSONL file with a text column (or a text pair) and a label column.

    A `split` column with train/validation (and optionally test) values is used when present (a
    labelled row with any other value is an error); otherwise a fixed seeded, stratified 80/20
    train/validation split is made, and the task has no test split. String labels map to ids in
    sorted order (labels that differ only in case or surrounding space are an error); integer
    labels keep their order; non-integer numbers make a regression task (metric Pearson). Rows
    without a label are left out; a missing text is the empty string, and a file whose training
    texts are all empty is an error. The splits are views of the file's text columns as read,
    never copies.
    """
    df = _read_table(path)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    text = _pick(columns, named.text, TEXT_COLUMNS, "text", path)
    label = _pick(columns, named.label, LABEL_COLUMNS, "label", path)
    pair = named.text_pair
    if pair is not None:
        _pick(columns, pair, (), "text pair", path)
    elif PAIR_COLUMNS.get(text.lower()) in {c.lower() for c in columns}:
        pair = next(c for c in columns if c.lower() == PAIR_COLUMNS[text.lower()])
    if label in (text, pair):
        raise SweepError(f"label column {label!r} is also a text column in {path.name}")
    labelled = np.flatnonzero(df[label].notna().to_numpy())
    for column in (c for c in (text, pair, label) if c):
        if df[column].dtype != object:  # only an object column can hold lists or objects
            continue
        nested = df[column].iloc[labelled].map(lambda v: isinstance(v, (list, dict)))
        if nested.any():
            raise SweepError(f"column {column!r} of {path.name} holds lists or objects, not plain values "
                             f"(row {int(nested.to_numpy().argmax()) + 1})")
    if not len(labelled):
        raise SweepError(f"task file {path.name} has no labelled rows")
    if "split" in df.columns:
        parts = _split_column(df["split"], labelled, path)
    else:
        train, val, _ = _three_way_split(df[label].iloc[labelled], VALIDATION_FRACTION, 0.0)
        parts = (labelled[train], labelled[val], labelled[:0])
    used = df[label].iloc[np.concatenate(parts)]
    if not _is_regression(used):
        _one_spelling(used, path)
    texts, pairs = Texts.column(df[text]), Texts.column(df[pair]) if pair else None
    if texts.view(parts[0]).all_blank() and (pairs is None or pairs.view(parts[0]).all_blank()):
        raise SweepError(f"every training text of {path.name} is empty (column {text!r}); fill it, or name "
                         "the text column with --text-column")
    return _task(path.stem, texts, pairs, df[label], (*parts[:2], parts[2] if len(parts[2]) else None), None)


def _split_column(column: pd.Series, labelled: np.ndarray, path: Path) -> tuple[np.ndarray, ...]:
    """(train, validation, test) row positions of the labelled rows, by their `split` values. A value
    that names no split (a misspelling, an empty cell) is an error, not a row left out in silence."""
    raw = column.iloc[labelled].fillna("").astype(str)
    names = raw.str.strip().str.lower().to_numpy()
    unknown = ~np.isin(names, list(SPLIT_NAMES))
    if unknown.any():
        counts = raw[unknown].value_counts()
        shown = ", ".join(f"{short(v, 30) if v.strip() else 'no value'} ({n} row{'s' if n > 1 else ''})"
                          for v, n in counts.iloc[:3].items())
        more = f" and {len(counts) - 3} more" if len(counts) > 3 else ""
        raise SweepError(f"`split` column of {path.name} holds {shown}{more}, which name no split; use "
                         "train, validation (or dev, val) or test")
    parts = tuple(labelled[np.isin(names, [n for n, i in SPLIT_NAMES.items() if i == part])]
                  for part in range(3))
    if not len(parts[0]) or not len(parts[1]):
        raise SweepError(f"`split` column in {path.name} needs both train and validation rows")
    return parts


def _one_spelling(labels: pd.Series, path: Path) -> None:
    """Class labels that differ only in case or surrounding space ('Pos', 'pos ') would be separate
    classes; which of them the file means is not ours to guess."""
    distinct = pd.Series(labels.unique())
    keys = distinct.map(lambda v: str(v).strip().casefold())
    clash = keys.duplicated(keep=False)
    if clash.any():
        spelled = distinct[keys == keys[clash].iloc[0]].map(lambda v: v.item() if hasattr(v, "item") else v)
        raise SweepError(f"labels {', '.join(short(v, 30) for v in spelled.iloc[:3])} of {path.name} differ "
                         "only in case or surrounding space, so they would be separate classes; write each "
                         "class one way")


def _three_way_split(
    labels: pd.Series, fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row positions in `labels`: a seeded shuffle, then of each class the
    first `fraction` to validation (at least one) and the next `test_fraction` to test (at least one,
    unless 0), each in shuffled order, but never a class's last example: a class with one example
    is trained on, not validated, since a class the head never saw in training cannot be predicted.
    The validation rows do not depend on test_fraction: adding a test split only takes rows from
    train."""
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(labels))
    shuffled = pd.Series(labels.to_numpy()[order])
    if _is_regression(shuffled):
        n_val = max(1, round(len(labels) * fraction))
        n_test = max(1, round(len(labels) * test_fraction)) if test_fraction > 0 else 0
        rank = np.arange(len(labels))
    else:
        rank = shuffled.groupby(shuffled, sort=False).cumcount().to_numpy()
        size = shuffled.groupby(shuffled, sort=False).transform("size").to_numpy()
        n_val = np.minimum(np.clip(np.round(size * fraction), 1, None), size - 1)
        n_test = np.clip(np.round(size * test_fraction), 1, None) if test_fraction > 0 else size * 0
        n_test = np.minimum(n_test, size - 1 - n_val)
    is_val = rank < n_val
    is_test = ~is_val & (rank < n_val + n_test)
    if (is_val | is_test).all() or not is_val.any():
        raise SweepError("too few examples to make a validation split; add a `split` column")
    return order[~(is_val | is_test)], order[is_val], order[is_test]


def _is_regression(labels: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return False
    values = labels.to_numpy(dtype=float)
    return not np.all(np.equal(np.mod(values, 1), 0))


def _task(
    name: str, text: Texts, pair: Texts | None, labels: pd.Series,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray | None], label_names: tuple[str, ...] | None,
) -> TaskData:
    """TaskData from whole columns and the (train, validation, test or None) row positions of each
    split: labels become class ids (or floats for regression), texts stay views of their columns."""
    used = np.concatenate([p for p in parts if p is not None])
    values_used = labels.iloc[used]
    metrics: tuple[str, ...]
    if label_names is None and _is_regression(values_used):
        names = None
        metrics = ("pearson", "spearman")
        codes = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = sorted(values_used.unique(), key=lambda v: (str(type(v)), v))
        names = label_names or tuple(str(v) for v in values)
        index = {v: i for i, v in enumerate(values)} if label_names is None else {
            n: i for i, n in enumerate(label_names)
        }
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1")
        codes = np.full(len(labels), -1, dtype=np.int64)
        codes[used] = [index[v] for v in values_used]

    whole = Split(text, pair, codes)
    train, val, test = parts
    return TaskData(name, whole.take(train), whole.take(val), names, metrics,
                    test=None if test is None else whole.take(test))


def task_summary(task: TaskData) -> dict[str, Any]:
    return {
        "task": task.name,
        "train_examples": len(task.train),
        "validation_examples": len(task.validation),
        **{f"{name}_examples": len(split) for name, split in task.extra_validation.items()},
        "test_examples": 0 if task.test is None else len(task.test),
        **{f"test_{name}_examples": len(split) for name, split in task.extra_test.items()},
        "num_labels": task.num_labels,
        "metric": task.main_metric,
    }
