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
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import pandas as pd

from sweep import embedded
from sweep.errors import SweepError
from sweep.hub import hub_reachable
from sweep.metrics import MAIN_SPLIT


@dataclass(frozen=True)
class Split:
    text: tuple[str, ...]
    pair: tuple[str, ...] | None
    label: tuple[float, ...]  # class ids for classification, floats for regression

    def __len__(self) -> int:
        return len(self.text)


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
        split (of any of train, validation and test) makes another study."""
        h = hashlib.sha256()
        for split in (self.train, self.validation):
            h.update(json.dumps([split.text, split.pair, split.label]).encode())
        for name, split in self.extra_validation.items():
            h.update(json.dumps([name, split.text, split.pair, split.label]).encode())
        # Only where there is one: a task without a test split keeps the fingerprint it always had.
        tests = {**({MAIN_SPLIT: self.test} if self.test is not None else {}), **self.extra_test}
        for name, split in tests.items():
            h.update(json.dumps(["test", name, split.text, split.pair, split.label]).encode())
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
        train, val, test = _three_way_split(df, "label", fraction, fraction)
        return _from_frames(task, train.assign(pair=None), val.assign(pair=None), spec.label_names,
                            test.assign(pair=None))
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

    def frame(key: str) -> pd.DataFrame:
        d = ds[key]
        return pd.DataFrame({"text": list(d[spec.text]),
                             "pair": None if spec.pair is None else list(d[spec.pair]),
                             "label": [float(v) if spec.regression else int(v) for v in d["label"]]})

    official = {MAIN_SPLIT: frame(spec.validation), **{n: frame(k) for n, k in spec.extra_validation}}
    train, validation, tests = glue_splits(frame("train"), official)

    def split(f: pd.DataFrame) -> Split:
        return Split(tuple(f["text"].tolist()), None if spec.pair is None else tuple(f["pair"].tolist()),
                     tuple(f["label"].tolist()))

    extra = {n: split(f) for n, f in tests.items() if n != MAIN_SPLIT}
    return TaskData(name, split(train), split(validation), label_names, spec.metrics,
                    test=split(tests[MAIN_SPLIT]), extra_test=extra)


def glue_splits(
    train: pd.DataFrame, official: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """(train, validation, test splits by name) of a GLUE task from frames with a `label` column: the
    official validation sets (`official`, the main one under MAIN_SPLIT) are the test splits, never
    seen by a search; the validation split a search selects on is carved out of the official train,
    seeded and stratified (by label; a regression task's at random), as large as the main test split.
    GLUE's own test sets carry no labels."""
    fraction = len(official[MAIN_SPLIT]) / len(train)
    rest, validation, _ = _three_way_split(train, "label", fraction, 0.0)
    return rest, validation, dict(official)


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
                f"{what} column {wanted!r} not in {path.name} (columns: {', '.join(columns)})"
            )
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    flag = "--label-column" if what == "label" else "--text-column"
    raise SweepError(
        f"no {what} column found in {path.name} (columns: {', '.join(columns)}); name it with {flag}"
    )


def load_local(path: Path, named: Columns = Columns()) -> TaskData:
    """A CSV/TSV/JSONL file with a text column (or a text pair) and a label column.

    A `split` column with train/validation (and optionally test) values is used when present;
    otherwise a fixed seeded, stratified 80/20 train/validation split is made, and the task has no
    test split. String labels map to ids in sorted order; integer labels keep
    their order; non-integer numbers make a regression task (metric Pearson).
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
    df = df.dropna(subset=[label])
    for column in (c for c in (text, pair, label) if c):
        nested = df[column].map(lambda v: isinstance(v, (list, dict)))
        if nested.any():
            raise SweepError(f"column {column!r} of {path.name} holds lists or objects, not plain values "
                             f"(row {int(nested.to_numpy().argmax()) + 1})")
    if df.empty:
        raise SweepError(f"task file {path.name} has no labelled rows")
    if "split" in df.columns:
        splits = df["split"].astype(str).str.lower()
        train_df, val_df = df[splits == "train"], df[splits.isin(["validation", "dev", "val"])]
        if train_df.empty or val_df.empty:
            raise SweepError(f"`split` column in {path.name} needs both train and validation rows")
        frames = (train_df, val_df, df[splits.isin(TEST_NAMES)])
    else:
        frames = (*_stratified_split(df, label, VALIDATION_FRACTION), df.iloc[:0])
    train_df, val_df, test_df = (
        pd.DataFrame(
            {
                "text": f[text].astype(str),
                "pair": f[pair].astype(str) if pair else None,
                "label": f[label],
            }
        )
        for f in frames
    )
    return _from_frames(path.stem, train_df, val_df, None, test_df if len(test_df) else None)


def _stratified_split(
    df: pd.DataFrame, label: str, fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): seeded shuffle, then `fraction` of each class to validation."""
    train, val, _ = _three_way_split(df, label, fraction, 0.0)
    return train, val


def _three_way_split(
    df: pd.DataFrame, label: str, fraction: float, test_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, test): a seeded shuffle, then of each class the first `fraction` to
    validation (at least one) and the next `test_fraction` to test (at least one, unless 0). The
    validation rows do not depend on test_fraction: adding a test split only takes rows from train."""
    rng = np.random.default_rng(SPLIT_SEED)
    shuffled = df.iloc[rng.permutation(len(df))]
    if _is_regression(shuffled[label]):
        n_val = max(1, round(len(df) * fraction))
        n_test = max(1, round(len(df) * test_fraction)) if test_fraction > 0 else 0
        rank = pd.Series(np.arange(len(df)), index=shuffled.index)
        n_val, n_test = pd.Series(n_val, index=shuffled.index), pd.Series(n_test, index=shuffled.index)
    else:
        rank = shuffled.groupby(label, sort=False).cumcount()
        size = shuffled.groupby(label, sort=False)[label].transform("size")
        n_val = (size * fraction).round().clip(lower=1)
        n_test = (size * test_fraction).round().clip(lower=1) if test_fraction > 0 else size * 0
    is_val = rank < n_val
    is_test = ~is_val & (rank < n_val + n_test)
    if (is_val | is_test).all():
        raise SweepError("too few examples to make a validation split; add a `split` column")
    return shuffled[~(is_val | is_test)], shuffled[is_val], shuffled[is_test]


def _is_regression(labels: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return False
    values = labels.to_numpy(dtype=float)
    return not np.all(np.equal(np.mod(values, 1), 0))


def _from_frames(
    name: str, train: pd.DataFrame, val: pd.DataFrame, label_names: tuple[str, ...] | None,
    test: pd.DataFrame | None = None,
) -> TaskData:
    """Frames with columns text, pair (or None values), label -> TaskData with label ids."""
    all_labels = pd.concat([train["label"], val["label"], *([] if test is None else [test["label"]])])
    metrics: tuple[str, ...]
    if label_names is None and _is_regression(all_labels):
        names = None
        metrics = ("pearson", "spearman")

        def encode(s: pd.Series) -> tuple[float, ...]:
            return tuple(float(v) for v in s)
    else:
        values = sorted(all_labels.unique(), key=lambda v: (str(type(v)), v))
        names = label_names or tuple(str(v) for v in values)
        index = {v: i for i, v in enumerate(values)} if label_names is None else {
            n: i for i, n in enumerate(label_names)
        }
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1")

        def encode(s: pd.Series) -> tuple[float, ...]:
            return tuple(index[v] for v in s)

    def split(f: pd.DataFrame) -> Split:
        has_pair = f["pair"].notna().any()
        return Split(
            tuple(f["text"].astype(str)),
            tuple(f["pair"].astype(str)) if has_pair else None,
            encode(f["label"]),
        )

    return TaskData(name, split(train), split(val), names, metrics,
                    test=None if test is None else split(test))


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
