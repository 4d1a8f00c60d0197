"""Tokenize a task once (cached on disk), sample fixed subsets of it, and batch it with little padding."""

from __future__ import annotations

import hashlib
import itertools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sweep.core.errors import SweepError
from sweep.data.tasks import Split, TaskData

# Length grouping: sort within windows of this many batches, as HF's LengthGroupedSampler does,
# so batches hold similar lengths while the order of examples stays random.
MEGABATCH = 50
# Seed of the train_limit / eval_limit samples: fixed, so every trial of a study sees the same examples.
SAMPLE_SEED = 0


CACHE_ENV = "LORAPLUS_SWEEP_CACHE"


def cache_dir() -> Path:
    """Where tokenized tasks and converted models are kept, created if missing; one line naming the
    place and the fix where it is a file or cannot be written (a trial would fail only after loading
    its model, and every trial of a sweep the same way)."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "loraplus-sweep").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        reason = "a file, not a directory" if path.exists() and not path.is_dir() else e.strerror or str(e)
        raise SweepError(f"the cache directory {path} cannot be used ({reason}); set {CACHE_ENV} to a "
                         "writable directory") from e
    return path


@dataclass(frozen=True)
class Encoded:
    """A split's token ids end to end in one flat array, each example at starts[i] for lengths[i]
    tokens: one array object however many examples (a tuple of per-example arrays costs a Python
    object each, several times the ids themselves for short texts)."""

    ids: np.ndarray  # int32
    types: np.ndarray | None  # token type ids, aligned with ids; None where the tokenizer has none
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int64
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def input_ids(self) -> list[np.ndarray]:
        """Each example's ids (views into `ids`)."""
        return [self.ids[s : s + n] for s, n in zip(self.starts.tolist(), self.lengths.tolist(), strict=True)]

    def positions(self, idx: np.ndarray) -> np.ndarray:
        """Where in `ids` the tokens of examples `idx` are, the examples end to end."""
        lengths = self.lengths[idx]
        firsts = np.cumsum(lengths) - lengths  # where each example begins in the result
        return np.repeat(self.starts[idx] - firsts, lengths) + np.arange(int(lengths.sum()))

    def take(self, idx: np.ndarray) -> Encoded:
        at = self.positions(idx)
        lengths = self.lengths[idx]
        return Encoded(self.ids[at], None if self.types is None else self.types[at],
                       np.cumsum(lengths) - lengths, lengths, self.labels[idx])

    def sample(self, n: int | None, stratified: bool) -> Encoded:
        """A fixed random sample of n examples (all of them when n is None), see `sample_indices`."""
        rows = sampled(self.labels, n, stratified)
        return self if rows is None else self.take(rows)


def sampled(labels: np.ndarray, n: int | None, stratified: bool) -> np.ndarray | None:
    """Which of these examples a sample of n (train_limit, eval_limit) keeps; None: all of them."""
    return None if n is None or n >= len(labels) else sample_indices(labels, n, stratified)


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


# Rows tokenized at a time: the tokenizer returns Python lists, about 30 times the size of the ids
# they hold, so a large split is tokenized a chunk at a time and only its compact arrays are kept.
ENCODE_CHUNK = 8192


def _encode(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int, spill: Path) -> Encoded:
    """The split's token ids; chunks go to the file `spill` as they are made and are read back as one
    array at the end, so no more than one copy of the ids is ever in memory."""
    lengths, types_seen = [], None
    with spill.open("wb") as ids_file, spill.with_suffix(".types").open("wb") as types_file:
        for start in range(0, len(split), ENCODE_CHUNK):
            stop = start + ENCODE_CHUNK
            pair = list(split.pair[start:stop]) if split.pair is not None else None
            out = tokenizer(list(split.text[start:stop]), pair, truncation=True, max_length=max_length,
                            padding=False, return_attention_mask=False)
            ids = out["input_ids"]
            lengths.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
            np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32).tofile(ids_file)
            types = out.get("token_type_ids")
            types_seen = types is not None
            if types is not None:
                np.fromiter(itertools.chain.from_iterable(types), dtype=np.int32).tofile(types_file)
    all_lengths = np.concatenate([np.empty(0, np.int64), *lengths])
    try:
        ids = np.fromfile(spill, dtype=np.int32)
        types = np.fromfile(spill.with_suffix(".types"), dtype=np.int32) if types_seen else None
    finally:
        spill.unlink(missing_ok=True)
        spill.with_suffix(".types").unlink(missing_ok=True)
    return Encoded(ids, types, np.cumsum(all_lengths) - all_lengths, all_lengths, np.asarray(split.label))


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(tokenizer.name_or_path).encode())
    h.update(str(len(tokenizer)).encode())
    h.update(tokenizer("Hello, world! Ünïcode 123", "pair text")["input_ids"].__repr__().encode())
    return h.hexdigest()[:16]


def _save(path: Path, splits: dict[str, Encoded]) -> None:
    """Flat arrays (a split's token ids end to end, cut by the lengths) in an .npz: no pickle in it."""
    arrays: dict[str, np.ndarray] = {"splits": np.array(list(splits), dtype=str)}
    for i, enc in enumerate(splits.values()):
        arrays[f"{i}_ids"] = enc.ids
        if enc.types is not None:
            arrays[f"{i}_types"] = enc.types
        arrays[f"{i}_labels"] = enc.labels
        arrays[f"{i}_lengths"] = enc.lengths
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)  # atomic, so concurrent trials never read half a file


def _load(path: Path) -> dict[str, Encoded]:
    """What `_save` wrote; ValueError (or a zip or OS error) for anything else."""
    with np.load(path, allow_pickle=False) as z:  # a crafted file cannot run code
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        out = {}
        for i, name in enumerate(z["splits"].tolist()):
            lengths, labels, ids = z[f"{i}_lengths"], z[f"{i}_labels"], z[f"{i}_ids"]
            types = z[f"{i}_types"] if f"{i}_types" in z.files else None
            if len(labels) != len(lengths) or len(ids) != int(lengths.sum()) or (
                    types is not None and len(types) != len(ids)) or (lengths < 0).any():
                raise ValueError("token ids, labels and lengths do not match")
            ids, types = (None if t is None else t.astype(np.int32, copy=False) for t in (ids, types))
            out[name] = Encoded(ids, types, np.cumsum(lengths) - lengths, lengths, labels)
    return out


def encode_task(
    task: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, split: str = "validation"
) -> tuple[Encoded, dict[str, Encoded]]:
    """(train, each split evaluated on `split` (validation or test) by name, the main one first) as
    token ids.

    Computed once per (tokenizer, task content, max_length, split) and cached on disk.
    """
    splits = {"train": task.train, **task.evaluated(split)}
    which = "" if split == "validation" else f"-{split}"  # the test splits carry the same names
    name = f"{_tokenizer_key(tokenizer)}-{task.fingerprint()}-{max_length}{which}.npz"
    path = cache_dir() / "tokens" / name
    if path.exists():
        try:
            encoded = _load(path)
            if list(encoded) == list(splits):
                return encoded.pop("train"), encoded
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
            pass
        path.unlink(missing_ok=True)  # a torn or stale cache file: rebuild it
    path.parent.mkdir(parents=True, exist_ok=True)
    spill = path.with_suffix(f".{os.getpid()}.ids")
    encoded = {name: _encode(split, tokenizer, max_length, spill) for name, split in splits.items()}
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


def eval_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Sorted by length: evaluation order does not matter, padding does. With `max_tokens`, a batch
    holds at most that many padded tokens too (one example at least): long examples come in smaller
    batches than short ones."""
    order = np.argsort(-lengths, kind="stable")
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        width = int(lengths[order[start]])  # the longest of the batch: sorted, it comes first
        n = min(batch_size, max(1, max_tokens // max(width, 1)))
        batches.append(order[start : start + n])
        start += n
    return batches


def collate(enc: Encoded, idx: np.ndarray, pad_id: int, regression: bool) -> dict[str, torch.Tensor]:
    lengths = enc.lengths[idx]
    width = int(lengths.max())
    real = np.arange(width) < lengths[:, None]  # row-major, as the examples' tokens lie end to end
    at = enc.positions(idx)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    ids[real] = enc.ids[at]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(real.astype(np.int64)),
        "labels": torch.as_tensor(enc.labels[idx], dtype=torch.float32 if regression else torch.long),
    }
    if enc.types is not None:
        types = np.zeros((len(idx), width), dtype=np.int64)
        types[real] = enc.types[at]
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch
