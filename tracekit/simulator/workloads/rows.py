"""Build one host's trace rows column by column, ready for `tracekit.trace.write_trace`.

Events arrive either one at a time (group changes) or as NumPy columns (runs of selections). Both
become Arrow arrays of exactly `SCHEMA`'s types, so the writer takes the batches without casting.
String columns are dictionary-encoded against fixed vocabularies, which keeps the output
byte-identical from run to run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tracekit.trace.schema import SCHEMA, load_spec

__all__ = ["NAMES", "RowBuffer", "TS_STEP_NS"]

TS_STEP_NS = 1_000
"""Synthetic clock: one event every microsecond."""

NAMES = ("SO_REUSEPORT", "SO_INCOMING_CPU", "net.ipv4.tcp_migrate_req")
"""The option and sysctl names the simulator writes."""

_INT_DTYPES = {pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64,
               pa.uint32(): np.uint32}


class RowBuffer:
    """Rows of one host, in seq order, taken out as record batches."""

    def __init__(self, host: str) -> None:
        self._vocab: dict[str, tuple[str, ...]] = {
            "host": (host,),
            "event": load_spec().event_names,
            "proto": ("tcp", "udp"),
            "name": NAMES,
        }
        self._index = {column: {word: i for i, word in enumerate(words)}
                       for column, words in self._vocab.items()}
        self._parts: list[tuple[int, dict[str, pa.Array]]] = []
        self._singles: list[dict[str, Any]] = []
        self.rows = 0
        self.next_seq = 0

    def row(self, event: str, **values: Any) -> int:
        """Append one event; returns its seq."""
        values["event"] = event
        self._singles.append(values)
        return self._advance(1)

    def bulk(self, event: str, n: int, **columns: np.ndarray | pa.Array) -> np.ndarray:
        """Append `n` events of one kind from whole columns; returns their seqs."""
        self._flush_singles()
        arrays = {name: self._array(name, values) for name, values in columns.items()}
        arrays["event"] = pa.array(np.full(n, self._index["event"][event], dtype=np.int32))
        self._parts.append((n, arrays))
        first = self.next_seq
        self._advance(n)
        return np.arange(first, first + n, dtype=np.int64)

    def code(self, column: str, word: str) -> int:
        """The dictionary index of `word` in a dictionary column."""
        return self._index[column][word]

    def mixed(self, events: np.ndarray, **columns: np.ndarray | pa.Array) -> np.ndarray:
        """Append rows of several events (`events`: each row's `code("event", name)`) from
        whole columns; returns their seqs."""
        self._flush_singles()
        n = len(events)
        arrays = {name: self._array(name, values) for name, values in columns.items()}
        arrays["event"] = pa.array(np.asarray(events, dtype=np.int32))
        self._parts.append((n, arrays))
        first = self.next_seq
        self._advance(n)
        return np.arange(first, first + n, dtype=np.int64)

    def take(self) -> pa.RecordBatch:
        """Everything appended since the last `take`, as one batch of `SCHEMA`."""
        self._flush_singles()
        n, first_seq = self.rows, self.next_seq - self.rows
        seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
        columns = []
        for field in SCHEMA:
            if field.name == "seq":
                array = pa.array(seq)
            elif field.name == "ts_ns":
                array = pa.array(seq * TS_STEP_NS)
            elif field.name == "host":
                array = pa.array(np.zeros(n, dtype=np.int32))
            else:
                array = self._concat(field, n)
            if pa.types.is_dictionary(field.type):
                array = pa.DictionaryArray.from_arrays(array, pa.array(self._vocab[field.name]))
            columns.append(array)
        self._parts, self.rows = [], 0
        return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)

    def _advance(self, n: int) -> int:
        seq = self.next_seq
        self.next_seq += n
        self.rows += n
        return seq

    def _concat(self, field: pa.Field, n: int) -> pa.Array:
        storage = pa.int32() if pa.types.is_dictionary(field.type) else field.type
        pieces = [arrays.get(field.name) for _, arrays in self._parts]
        if all(piece is None for piece in pieces):
            return pa.nulls(n, storage)
        return pa.concat_arrays([
            pa.nulls(rows, storage) if piece is None else piece
            for (rows, _), piece in zip(self._parts, pieces)
        ])

    def _array(self, name: str, values: np.ndarray | pa.Array | list) -> pa.Array:
        field = SCHEMA.field(name)
        if isinstance(values, pa.Array):
            return values
        if pa.types.is_dictionary(field.type):
            index = self._index[name]
            return pa.array([None if v is None else index[v] for v in values], type=pa.int32())
        if field.type in _INT_DTYPES and isinstance(values, np.ndarray):
            return pa.array(values.astype(_INT_DTYPES[field.type], copy=False))
        return pa.array(values, type=field.type)

    def _flush_singles(self) -> None:
        if not self._singles:
            return
        rows, self._singles = self._singles, []
        names = sorted({name for row in rows for name in row})
        arrays = {name: self._array(name, [row.get(name) for row in rows]) for name in names}
        self._parts.append((len(rows), arrays))
