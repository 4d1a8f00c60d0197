"""A task's text column held once: Arrow strings in contiguous buffers (as a file or a dataset was
read, without a copy where the reader already made Arrow data), each split a view of row positions
into it, read back as Python strings one slice at a time. A 400,000-row file then costs its text
once, not once per split plus a Python object per row."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

CHUNK = 8192  # rows turned into Python strings at a time (iteration, hashing)


class Texts(Sequence[str]):
    """Rows `rows` of an Arrow string column, as a read-only sequence of str."""

    __slots__ = ("_column", "_rows")

    def __init__(self, column: pa.ChunkedArray, rows: np.ndarray | None = None) -> None:
        self._column = column
        self._rows = np.arange(len(column), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    @classmethod
    def of(cls, values: Iterable[str]) -> Texts:
        """From Python strings (a copy)."""
        return cls(pa.chunked_array([pa.array(list(values), type=pa.string())], type=pa.string()))

    @classmethod
    def column(cls, values: pd.Series) -> Texts:
        """A frame's column, every row: Arrow-backed strings are shared, not copied; anything else is
        converted as `astype(str)` would; a missing value is the empty string."""
        if not (pd.api.types.is_string_dtype(values.dtype) and values.dtype != object):
            values = values.astype(str) if values.dtype != object else values.map(
                lambda v: v if isinstance(v, str) or v is None or v != v else str(v))
        column = pa.array(values, from_pandas=True)
        if isinstance(column, pa.Array):
            column = pa.chunked_array([column])
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            column = column.cast(pa.string())
        return cls(column.fill_null(""))

    def view(self, rows: np.ndarray) -> Texts:
        """The rows at positions `rows` of this sequence, sharing its strings."""
        return Texts(self._column, self._rows[np.asarray(rows, np.int64)])

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self._column.take(pa.array(self._rows[i])).to_pylist()
        return self._column[int(self._rows[i])].as_py()

    def all_blank(self) -> bool:
        """Whether every row is empty or white space (a text column never filled in), read in
        chunks as Arrow data: a column with text answers from its first chunk."""
        for start in range(0, len(self), CHUNK):
            taken = self._column.take(pa.array(self._rows[start:start + CHUNK]))
            if pc.any(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(taken)), 0)).as_py():
                return False
        return True

    def chunks(self) -> Iterator[list[str]]:
        for start in range(0, len(self), CHUNK):
            yield self[start:start + CHUNK]

    def __iter__(self) -> Iterator[str]:
        for chunk in self.chunks():
            yield from chunk

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Texts({len(self)} rows)"


def hash_json(h: Any, items: Sequence[object]) -> None:
    """h.update(json.dumps(list(items)).encode()) without building the string: Texts are streamed a
    chunk at a time, arrays written as lists; the bytes are the same."""
    h.update(b"[")
    for i, item in enumerate(items):
        if i:
            h.update(b", ")
        if isinstance(item, Texts):
            h.update(b"[")
            for j, chunk in enumerate(item.chunks()):
                h.update((", " if j else "").encode() + json.dumps(chunk)[1:-1].encode())
            h.update(b"]")
        elif isinstance(item, np.ndarray):
            h.update(json.dumps(item.tolist()).encode())
        else:
            h.update(json.dumps(item).encode())
    h.update(b"]")
