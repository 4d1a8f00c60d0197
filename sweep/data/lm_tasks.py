"""Causal-LM tasks: rows from a JSONL file or an embedded instruction task, checked and split.

A file holds rows of one shape (sweep.data.lm_batches turns them into tokens and labels):

- chat, `{"messages": [{"role": ..., "content": ...}, ...]}`: rendered with the tokenizer's chat
  template; the loss is on the assistant turns (their content and the template's end of turn);
- prompt, `{"prompt": ..., "completion": ...}`: the loss is on the completion and the EOS after it
  (the completion follows the prompt as it is: put the space or newline between them in one of them);
- text, `{"text": ...}`: the loss is on every token, and on an EOS after the text.

Optional fields: `split` (train, validation or test; on every row or on none: without it a seeded
90/10 train/validation split is made) and, on chat and prompt rows, `choices` (the candidate answers)
with `answer` (one of them, or its index). A row with choices stops where the answer goes (no
completion, no final assistant turn); its answer is what it trains on, and evaluation scores every
candidate by its likelihood (sweep.engine.lm_eval).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sweep.core.errors import SweepError
from sweep.data import embedded
from sweep.data.tasks import LABEL_COLUMNS, load_task, no_test_split

SHAPES = {"messages": "chat", "prompt": "prompt", "text": "text"}
KEYS = {"chat": {"messages"}, "prompt": {"prompt", "completion"}, "text": {"text"}}
OPTIONAL = {"split", "choices", "answer"}
SPLITS = {"train": "train", "validation": "validation", "val": "validation", "dev": "validation",
          "test": "test"}
PACKING_NEEDS_LM = "packing is for causal-LM tasks; a classifier reads one example per row"
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0  # fixed, so every trial on every machine sees the same validation rows


@dataclass(frozen=True)
class Row:
    """One example, as read and checked. `line` is where it came from (1-based), for messages."""

    shape: str  # chat, prompt or text
    line: int
    messages: tuple[tuple[str, str], ...] = ()  # chat: (role, content)
    prompt: str = ""
    completion: str = ""
    text: str = ""
    choices: tuple[str, ...] = ()
    answer: int = -1  # index into choices

    def completed(self, completion: str) -> Row:
        """This row with `completion` as its completion, or as the assistant's reply."""
        if self.shape == "chat":
            return replace(self, messages=(*self.messages, ("assistant", completion)))
        return replace(self, completion=completion)

    def target(self) -> Row:
        """What training reads: a row with choices, completed by its answer."""
        return self.completed(self.choices[self.answer]) if self.choices else self

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.shape == "chat":
            out = {"messages": [{"role": r, "content": c} for r, c in self.messages]}
        elif self.shape == "prompt":
            out = {"prompt": self.prompt, "completion": self.completion}
        else:
            out = {"text": self.text}
        return {**out, "choices": list(self.choices), "answer": self.answer} if self.choices else out


@dataclass(frozen=True)
class LMTask:
    name: str
    train: tuple[Row, ...]
    validation: tuple[Row, ...]
    test: tuple[Row, ...] = ()

    @property
    def shape(self) -> str:
        return self.train[0].shape

    @property
    def has_choices(self) -> bool:
        """Rows carry candidate answers: evaluation can report accuracy."""
        return bool(self.train[0].choices)

    def evaluated(self, split: str) -> tuple[Row, ...]:
        """The rows a trial evaluating on `split` (validation or test) scores."""
        if split == "test":
            if not self.test:
                raise SweepError(no_test_split(self.name))
            return self.test
        return self.validation

    @property
    def metrics(self) -> tuple[str, ...]:
        """Per trained token of the validation rows, the loss (the default objective) and perplexity;
        with candidate answers, the accuracy of the likeliest one too."""
        return ("loss", "perplexity", "accuracy") if self.has_choices else ("loss", "perplexity")

    def fingerprint(self) -> str:
        """Hash of the content, so a cache of its tokens can never serve stale data."""
        h = hashlib.sha256()
        for split in (self.train, self.validation, self.test):
            h.update(json.dumps([r.to_json() for r in split], sort_keys=True).encode())
        return h.hexdigest()[:16]


def task_kind(task: str, kind: str = "auto", label_column: str | None = None) -> str:
    """classification or causal-lm: `kind` where it says, else from the task. An embedded instruction
    task is causal-lm; so is a JSONL file whose first row is a causal-LM row (messages, or prompt, or
    text with nothing but the optional fields beside it), unless a label column is named or, for
    text rows, any row holds a label (a labelled file whose first rows lack one is still labelled)."""
    if kind != "auto":
        return kind
    if task in embedded.INSTRUCTION_TASKS:
        return "causal-lm"
    path = Path(task)
    if path.suffix.lower() != ".jsonl" or label_column is not None or not path.is_file():
        return "classification"
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = next((line for line in f if line.strip()), "")
            record = json.loads(first)
            if not isinstance(record, dict):
                return "classification"
            if "messages" in record or "prompt" in record:
                return "causal-lm"
            if not ("text" in record and set(record) <= {"text"} | OPTIONAL):
                return "classification"
            return "classification" if any(_labelled(line) for line in f) else "causal-lm"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "classification"  # its loader says what is wrong with it


def _labelled(line: str) -> bool:
    """Whether a JSONL line is an object with a label column (sweep.data.tasks.LABEL_COLUMNS); only lines
    that spell one in quotes are parsed, so a causal-LM file is read, not parsed, to its end."""
    lower = line.lower()
    if not any(f'"{name}"' in lower for name in LABEL_COLUMNS):
        return False
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False  # its loader says what is wrong with it
    return isinstance(record, dict) and any(str(k).lower() in LABEL_COLUMNS for k in record)


def load_lm_task(task: str) -> LMTask:
    """An embedded instruction task by name, or a JSONL file of rows."""
    if task in embedded.INSTRUCTION_TASKS:
        return rows_to_task(task, enumerate(embedded_rows(task), start=1), task)
    path = Path(task)
    if path.suffix.lower() != ".jsonl":
        names = ", ".join(sorted(embedded.INSTRUCTION_TASKS))
        raise SweepError(f"unknown causal-LM task {task!r}: use one of {names} or a .jsonl file")
    return rows_to_task(path.stem, read_jsonl(path), path.name)


def embedded_rows(name: str) -> list[dict[str, Any]]:
    """An embedded instruction task's rows as a JSONL file of them would hold them, each with its
    split: its twin classification task's documents and split (train, validation and test)."""
    spec = embedded.INSTRUCTION_TASKS[name]
    twin = load_task(spec.twin)
    path = embedded.data_path(embedded.TASKS[spec.twin])
    rows = []
    for split_name, split in (("train", twin.train), ("validation", twin.validation), ("test", twin.test)):
        if split is None:
            continue
        labels = [twin.label_names[int(i)] for i in split.label]
        rows += [{**row, "split": split_name} for row in spec.rows(split.text, labels, path)]
    return rows


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line."""
    if not path.is_file():
        raise SweepError(f"task file {str(path)!r} does not exist" if not path.exists()
                         else f"task file {str(path)!r} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
    except UnicodeDecodeError as e:
        raise SweepError(f"{path.name} is not UTF-8 text: {e.reason} at byte {e.start}") from e
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise SweepError(f"{path.name} line {number}: not valid JSON ({e.msg})") from e
    return records


def rows_to_task(name: str, records: Iterable[tuple[int, Any]], source: str) -> LMTask:
    """Check every record and split them (see the module's docstring for what a row may hold)."""
    rows: list[Row] = []
    splits: list[str | None] = []
    for line, record in records:
        row, split = parse_row(record, line, source)
        first = rows[0] if rows else row
        where = f"{source} line {line}"
        if row.shape != first.shape:
            raise SweepError(f"{where}: a {row.shape} row, but line {first.line} is a {first.shape} row; "
                             "a file holds rows of one shape")
        if bool(row.choices) != bool(first.choices):
            raise SweepError(f"{where}: choices on some rows only (line {first.line} has "
                             f"{'some' if first.choices else 'none'}); give every row choices or none")
        if splits and (split is None) != (splits[0] is None):
            raise SweepError(f"{where}: a split on some rows only; give every row a split or none")
        rows.append(row)
        splits.append(split)
    if not rows:
        raise SweepError(f"{source} has no rows")
    if splits[0] is None:
        if len(rows) < 2:
            raise SweepError(f"{source} has one row: too few to hold out a validation row")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
        n_val = max(1, round(len(rows) * VALIDATION_FRACTION))
        held = set(order[:n_val].tolist())
        splits = ["validation" if i in held else "train" for i in range(len(rows))]
    parts = {s: tuple(r for r, rs in zip(rows, splits, strict=True) if rs == s)
             for s in ("train", "validation", "test")}
    if not parts["train"] or not parts["validation"]:
        raise SweepError(f"the split field in {source} needs both train and validation rows")
    return LMTask(name, parts["train"], parts["validation"], parts["test"])


def parse_row(record: Any, line: int, source: str) -> tuple[Row, str | None]:
    """(the row, its split or None), or a SweepError that names the line and what is wrong."""
    where = f"{source} line {line}"
    if not isinstance(record, dict):
        raise SweepError(f"{where}: a row must be a JSON object, got {type(record).__name__}")
    shapes = [SHAPES[k] for k in SHAPES if k in record]
    if len(shapes) != 1:
        raise SweepError(f"{where}: a row holds exactly one of messages (chat), prompt (with completion) "
                         f"or text; this one has {', '.join(k for k in SHAPES if k in record) or 'none'}")
    shape = shapes[0]
    unknown = set(record) - KEYS[shape] - OPTIONAL
    if unknown:
        raise SweepError(f"{where}: unknown field {sorted(unknown)[0]!r} in a {shape} row (allowed: "
                         f"{', '.join(sorted(KEYS[shape] | OPTIONAL))})")

    def string(key: str, value: Any, empty_ok: bool = False) -> str:
        if not isinstance(value, str) or (not value and not empty_ok):
            got = "an empty string" if value == "" else type(value).__name__
            raise SweepError(f"{where}: {key} must be a non-empty string, got {got}")
        return value

    choices: tuple[str, ...] = ()
    answer = -1
    if "choices" in record or "answer" in record:
        if shape == "text":
            raise SweepError(f"{where}: text rows take no choices; use prompt or chat rows")
        raw = record.get("choices")
        if not isinstance(raw, list) or len(raw) < 2:
            raise SweepError(f"{where}: choices must be a list of at least two strings")
        choices = tuple(string("each choice", c) for c in raw)
        if len(set(choices)) != len(choices):
            raise SweepError(f"{where}: choices repeat one another")
        given = record.get("answer")
        if isinstance(given, str) and given in choices:
            answer = choices.index(given)
        elif isinstance(given, int) and not isinstance(given, bool) and 0 <= given < len(choices):
            answer = given
        else:
            raise SweepError(f"{where}: answer must be one of the choices (or its index), got {given!r}")

    if shape == "text":
        row = Row("text", line, text=string("text", record["text"]))
    elif shape == "prompt":
        if choices and "completion" in record:
            raise SweepError(f"{where}: a row with choices takes no completion: its answer is the completion")
        if not choices and "completion" not in record:
            raise SweepError(f"{where}: a prompt row needs a completion (or choices and an answer)")
        completion = "" if choices else string("completion", record["completion"])
        row = Row("prompt", line, prompt=string("prompt", record["prompt"], empty_ok=True),
                  completion=completion)
    else:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise SweepError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
        turns = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                    m.get("content"), str):
                raise SweepError(f"{where}: each message must be an object with a string role and content")
            turns.append((m["role"], m["content"]))
        assistant = [r == "assistant" for r, _ in turns]
        if choices and assistant[-1]:
            raise SweepError(f"{where}: a chat row with choices ends before the answer: its last message "
                             "must not be the assistant's")
        if not choices and not any(assistant):
            raise SweepError(f"{where}: a chat row needs an assistant message to train on")
        row = Row("chat", line, messages=tuple(turns))
    row = replace(row, choices=choices, answer=answer)

    split = record.get("split")
    if split is not None and (not isinstance(split, str) or split.lower() not in SPLITS):
        raise SweepError(f"{where}: split must be train, validation or test, got {split!r}")
    return row, None if split is None else SPLITS[split.lower()]
