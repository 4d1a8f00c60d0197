"""Task registry: GLUE from `datasets`, local CSV/TSV/JSONL files, and the embedded offline tasks.

One place decides each task's text columns, validation split and metrics (main metric first).
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

    def __post_init__(self) -> None:
        for name in self.extra_validation:
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
        return {MAIN_SPLIT: self.validation, **self.extra_validation}

    def fingerprint(self) -> str:
        """Hash of the content, so a tokenization cache can never serve stale data."""
        h = hashlib.sha256()
        for split in (self.train, self.validation):
            h.update(json.dumps([split.text, split.pair, split.label]).encode())
        for name, split in self.extra_validation.items():
            h.update(json.dumps([name, split.text, split.pair, split.label]).encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class GlueSpec:
    text: str
    pair: str | None
    metrics: tuple[str, ...]
    validation: str = "validation"
    regression: bool = False
    extra_validation: tuple[tuple[str, str], ...] = ()  # (name, dataset split) evaluated too


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
SPLIT_SEED = 0  # fixed, so every trial on every machine sees the same validation set


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
        train, val = _stratified_split(df, "label", spec.validation_size / len(df))
        return _from_frames(task, train.assign(pair=None), val.assign(pair=None), spec.label_names)
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

    def split(key: str) -> Split:
        d = ds[key]
        return Split(
            tuple(d[spec.text]),
            None if spec.pair is None else tuple(d[spec.pair]),
            tuple(float(v) if spec.regression else int(v) for v in d["label"]),
        )

    extra = {extra_name: split(key) for extra_name, key in spec.extra_validation}
    return TaskData(name, split("train"), split(spec.validation), label_names, spec.metrics, extra)


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

    A `split` column with train/validation values is used when present; otherwise a fixed seeded,
    stratified 80/20 split is made. String labels map to ids in sorted order; integer labels keep
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
        frames = (train_df, val_df)
    else:
        frames = _stratified_split(df, label, VALIDATION_FRACTION)
    train_df, val_df = (
        pd.DataFrame(
            {
                "text": f[text].astype(str),
                "pair": f[pair].astype(str) if pair else None,
                "label": f[label],
            }
        )
        for f in frames
    )
    return _from_frames(path.stem, train_df, val_df, None)


def _stratified_split(
    df: pd.DataFrame, label: str, fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): seeded shuffle, then `fraction` of each class to validation."""
    rng = np.random.default_rng(SPLIT_SEED)
    shuffled = df.iloc[rng.permutation(len(df))]
    if _is_regression(shuffled[label]):
        n_val = max(1, round(len(df) * fraction))
        return shuffled.iloc[n_val:], shuffled.iloc[:n_val]
    rank = shuffled.groupby(label, sort=False).cumcount()
    size = shuffled.groupby(label, sort=False)[label].transform("size")
    is_val = rank < (size * fraction).round().clip(lower=1)
    if is_val.all():
        raise SweepError("too few examples to make a validation split; add a `split` column")
    return shuffled[~is_val], shuffled[is_val]


def _is_regression(labels: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return False
    values = labels.to_numpy(dtype=float)
    return not np.all(np.equal(np.mod(values, 1), 0))


def _from_frames(
    name: str, train: pd.DataFrame, val: pd.DataFrame, label_names: tuple[str, ...] | None
) -> TaskData:
    """Frames with columns text, pair (or None values), label -> TaskData with label ids."""
    all_labels = pd.concat([train["label"], val["label"]])
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

    return TaskData(name, split(train), split(val), names, metrics)


def task_summary(task: TaskData) -> dict[str, Any]:
    return {
        "task": task.name,
        "train_examples": len(task.train),
        "validation_examples": len(task.validation),
        **{f"{name}_examples": len(split) for name, split in task.extra_validation.items()},
        "num_labels": task.num_labels,
        "metric": task.main_metric,
    }
