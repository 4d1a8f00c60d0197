"""Tokenize a task once (cached on disk), sample fixed subsets of it, and batch it with little padding."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sweep.tasks import Split, TaskData

# Length grouping: sort within windows of this many batches, as HF's LengthGroupedSampler does,
# so batches hold similar lengths while the order of examples stays random.
MEGABATCH = 50
# Seed of the train_limit / eval_limit samples: fixed, so every trial of a study sees the same examples.
SAMPLE_SEED = 0


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

    def take(self, idx: np.ndarray) -> Encoded:
        types = None if self.token_type_ids is None else tuple(self.token_type_ids[i] for i in idx)
        return Encoded(tuple(self.input_ids[i] for i in idx), types, self.labels[idx], self.lengths[idx])

    def sample(self, n: int | None, stratified: bool) -> Encoded:
        """A fixed random sample of n examples (all of them when n is None), see `sample_indices`."""
        if n is None or n >= len(self):
            return self
        return self.take(sample_indices(self.labels, n, stratified))


def sample_indices(labels: np.ndarray, n: int, stratified: bool, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Indices of a seeded random sample of n examples, in their original order.

    Stratified, each class gets its share of n rounded down or up (largest remainders get the extra
    examples), so a file sorted by label still gives every class its part.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    if not stratified:
        return np.sort(order[:n])
    _, cls, counts = np.unique(labels[order], return_inverse=True, return_counts=True)
    quota = n * counts / len(labels)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: n - int(take.sum())]] += 1
    by_class = np.argsort(cls, kind="stable")  # shuffled order within each class
    rank = np.empty(len(cls), dtype=np.int64)
    rank[by_class] = np.arange(len(cls)) - (np.cumsum(counts) - counts)[cls[by_class]]
    return np.sort(order[rank < take[cls]])


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


def _save(path: Path, splits: dict[str, Encoded]) -> None:
    """Flat arrays (token ids of a split end to end, cut by the lengths) in an .npz: no pickle in it."""
    arrays: dict[str, np.ndarray] = {"splits": np.array(list(splits), dtype=str)}
    for i, enc in enumerate(splits.values()):
        arrays[f"{i}_ids"] = np.concatenate((np.empty(0, np.int64), *enc.input_ids))
        if enc.token_type_ids is not None:
            arrays[f"{i}_types"] = np.concatenate((np.empty(0, np.int64), *enc.token_type_ids))
        arrays[f"{i}_labels"] = enc.labels
        arrays[f"{i}_lengths"] = enc.lengths
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)  # atomic, so concurrent trials never read half a file


def _cut(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    if len(flat) != int(lengths.sum()):
        raise ValueError("token ids do not match the lengths")
    return tuple(np.split(flat, np.cumsum(lengths)[:-1])) if len(lengths) else ()


def _load(path: Path) -> dict[str, Encoded]:
    """What `_save` wrote; ValueError (or a zip or OS error) for anything else."""
    with np.load(path, allow_pickle=False) as z:  # a crafted file cannot run code
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        out = {}
        for i, name in enumerate(z["splits"].tolist()):
            lengths, labels = z[f"{i}_lengths"], z[f"{i}_labels"]
            if len(labels) != len(lengths):
                raise ValueError("labels do not match the lengths")
            types = _cut(z[f"{i}_types"], lengths) if f"{i}_types" in z.files else None
            out[name] = Encoded(_cut(z[f"{i}_ids"], lengths), types, labels, lengths)
    return out


def encode_task(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[Encoded, dict[str, Encoded]]:
    """(train, each evaluation split by name, the main one first) as token ids.

    Computed once per (tokenizer, task content, max_length) and cached on disk.
    """
    splits = {"train": task.train, **task.evaluation_splits}
    path = cache_dir() / "tokens" / f"{_tokenizer_key(tokenizer)}-{task.fingerprint()}-{max_length}.npz"
    if path.exists():
        try:
            encoded = _load(path)
            if list(encoded) == list(splits):
                return encoded.pop("train"), encoded
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
            pass
        path.unlink(missing_ok=True)  # a torn or stale cache file: rebuild it
    encoded = {name: _encode(split, tokenizer, max_length) for name, split in splits.items()}
    _save(path, encoded)
    return encoded.pop("train"), encoded


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
