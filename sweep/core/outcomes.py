"""A trial's per-example outcomes at its final evaluation, kept compact beside its result, so that two
trials scored on the same examples can be compared example by example (sweep.core.stats.paired_se).

A record is a JSON-able dict: `n` (examples), `key` (a hash of what identifies the examples: their
gold labels, or a causal LM's trained tokens per example; two records pair only where n and key
agree) and `arrays`, each "dtype:base64" of its little-endian bytes, a boolean array packed 8 to the
byte:
- classification: `correct` (per example), and `pred` and `gold` where the metric is not a mean of
  per-example terms (F1, macro-F1, MCC), to recompute it on resamples (as bits for two classes);
- regression: `sq_error`, `pred` and `gold` (float16: Pearson and Spearman need the pairs);
- causal LM: `nll` (summed over each example's trained tokens) and `tokens` for loss and perplexity;
  `correct` for accuracy by candidate likelihood.
Validation examples are in a fixed order for every trial of a study (seeded splits, a seeded
eval_limit sample, each prediction stored at its example's index), so index i is one example in both.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

import numpy as np

MEAN_OF_CORRECT = ("accuracy",)  # metrics that are the mean of the `correct` terms


def _encode(values: np.ndarray) -> str:
    values = np.asarray(values)
    if values.dtype == bool:
        return "bits:" + base64.b64encode(np.packbits(values).tobytes()).decode()
    dtype = values.dtype.newbyteorder("<")
    return f"{dtype.str}:" + base64.b64encode(values.astype(dtype).tobytes()).decode()


def _decode(text: str, n: int) -> np.ndarray:
    dtype, data = text.split(":", 1)
    raw = base64.b64decode(data.encode(), validate=True)
    if dtype == "bits":
        return np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool)
    values = np.frombuffer(raw, np.dtype(dtype))
    if len(values) != n:
        raise ValueError(f"{len(values)} values for {n} examples")
    return values.astype(np.float64 if values.dtype.kind == "f" else np.int64)


def _key(identity: np.ndarray) -> str:
    identity = np.ascontiguousarray(identity, dtype="<f8")
    return hashlib.sha256(identity.tobytes()).hexdigest()[:16]


def _record(identity: np.ndarray, arrays: Mapping[str, np.ndarray]) -> dict:
    return {"n": len(identity), "key": _key(identity), "arrays": {k: _encode(v) for k, v in arrays.items()}}


def _labels(values: np.ndarray) -> np.ndarray:
    """Class ids in the smallest integer type that holds them (one byte for up to 256 classes)."""
    ints = values.astype(np.int64)
    return ints.astype(np.uint8 if ints.min(initial=0) >= 0 and ints.max(initial=0) < 256 else np.int32)


def classification(metric: str, pred: np.ndarray, gold: np.ndarray, regression: bool) -> dict | None:
    """The record of predictions `pred` against `gold`; None where a prediction is NaN (a diverged
    head: its value is the worst score, not a measurement)."""
    pred, gold = np.asarray(pred, np.float64), np.asarray(gold, np.float64)
    if np.isnan(pred).any():
        return None
    if regression:
        # float16 keeps ~3 significant digits: enough for a standard error, at 2 bytes an example
        return _record(gold, {"sq_error": ((pred - gold) ** 2).astype(np.float16),
                              "pred": pred.astype(np.float16), "gold": gold.astype(np.float16)})
    arrays = {"correct": pred == gold}
    if metric not in MEAN_OF_CORRECT:
        binary = np.isin(pred, (0, 1)).all() and np.isin(gold, (0, 1)).all()  # then a bit each (QQP: 40k)
        arrays |= {"pred": pred == 1, "gold": gold == 1} if binary else {"pred": _labels(pred),
                                                                            "gold": _labels(gold)}
    return _record(gold, arrays)


def causal_lm(metric: str, nll: np.ndarray | None, tokens: np.ndarray | None,
              correct: np.ndarray | None = None, answers: np.ndarray | None = None) -> dict | None:
    """The record of a causal LM's evaluation for `metric`: loss and perplexity from each example's
    summed NLL and trained tokens, accuracy from each row's right or wrong candidate."""
    if metric == "accuracy":
        if correct is None:
            return None
        return _record(np.asarray(answers), {"correct": np.asarray(correct, bool)})
    if nll is None or tokens is None or not np.isfinite(nll).all():
        return None
    return _record(np.asarray(tokens), {"nll": np.asarray(nll, np.float32),
                                        "tokens": np.asarray(tokens, np.int32)})


def arrays(record: object) -> dict[str, np.ndarray] | None:
    """The record's arrays, decoded; None for no record, or one that does not decode (a damaged or
    edited database is no reason to fail a report: that trial is compared unpaired)."""
    if not isinstance(record, Mapping):
        return None
    try:
        n = int(record["n"])
        return {k: _decode(v, n) for k, v in record["arrays"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def aligned(a: object, b: object) -> bool:
    """Two records of the same examples in the same order (same count, same identity hash)."""
    return (isinstance(a, Mapping) and isinstance(b, Mapping) and a.get("n") == b.get("n")
            and a.get("key") is not None and a.get("key") == b.get("key"))
