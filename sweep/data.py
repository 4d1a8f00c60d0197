"""Tokenize a task once (cached on disk), and batch it with little padding."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sweep.tasks import Split, TaskData

# Length grouping: sort within windows of this many batches, as HF's LengthGroupedSampler does,
# so batches hold similar lengths while the order of examples stays random.
MEGABATCH = 50


def cache_dir() -> Path:
    return Path(os.environ.get("LORAPLUS_SWEEP_CACHE", Path.home() / ".cache" / "loraplus-sweep"))


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray, ...] | None
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int | None) -> Encoded:
        if n is None or n >= len(self):
            return self
        types = None if self.token_type_ids is None else self.token_type_ids[:n]
        return Encoded(self.input_ids[:n], types, self.labels[:n], self.lengths[:n])


def _encode(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Encoded:
    out = tokenizer(
        list(split.text),
        list(split.pair) if split.pair is not None else None,
        truncation=True,
        max_length=max_length,
        padding=False,
    )
    ids = tuple(np.asarray(x, dtype=np.int64) for x in out["input_ids"])
    types = out.get("token_type_ids")
    return Encoded(
        ids,
        None if types is None else tuple(np.asarray(x, dtype=np.int64) for x in types),
        np.asarray(split.label),
        np.asarray([len(x) for x in ids], dtype=np.int64),
    )


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(tokenizer.name_or_path).encode())
    h.update(str(len(tokenizer)).encode())
    h.update(tokenizer("Hello, world! Ünïcode 123", "pair text")["input_ids"].__repr__().encode())
    return h.hexdigest()[:16]


def encode_task(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[Encoded, Encoded]:
    """(train, validation) token ids; computed once per (tokenizer, task content, max_length)."""
    path = cache_dir() / "tokens" / f"{_tokenizer_key(tokenizer)}-{task.fingerprint()}-{max_length}.pt"
    if path.exists():
        try:
            train, val = torch.load(path, weights_only=False)
            return train, val
        except (OSError, EOFError, RuntimeError, ValueError):
            path.unlink(missing_ok=True)  # a torn or stale cache file: rebuild it
    train = _encode(task.train, tokenizer, max_length)
    val = _encode(task.validation, tokenizer, max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save((train, val), tmp)
    tmp.replace(path)  # atomic, so concurrent trials never read half a file
    return train, val


def train_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches, grouped by length and shuffled."""
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    window = batch_size * MEGABATCH
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Sorted by length: evaluation order does not matter, padding does."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(enc: Encoded, idx: np.ndarray, pad_id: int, regression: bool) -> dict[str, torch.Tensor]:
    width = int(enc.lengths[idx].max())
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    types = None if enc.token_type_ids is None else np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        n = enc.lengths[i]
        ids[row, :n] = enc.input_ids[i]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = enc.token_type_ids[i]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.as_tensor(enc.labels[idx], dtype=torch.float32 if regression else torch.long),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch
