"""JSON Lines parsed in bulk by Arrow's reader: the fast path of `tracekit normalize`.

`arrow_batches` yields the rows of a JSON Lines trace as loosely typed batches (integers as int64,
strings, ``payload``/``prog`` decoded from hex), exactly the rows the line-by-line reader of
`tracekit.trace.normalize` would produce, or raises `BulkRefused` when the input has anything
that reader might judge differently: a parse error, a value of another JSON type, an unknown
key, invalid UTF-8, a hex string that is not plain hex digits, a byte-order mark, or a line that
does not hold exactly one object. The caller then replays the input through the line-by-line
reader, which names the line and column of the error (or accepts it).

Arrow parses a stream of whitespace-separated JSON values, not lines, so line structure is
checked apart (`count_object_lines`): each non-blank line must end in ``}`` and there must be as
many rows as non-blank lines. Values are scalars (the explicit schema refuses nested objects), so
a ``}`` ending a line closes an object, no object spans a line break, and with as many objects as
lines each line holds exactly one.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tracekit.trace.schema import load_spec
from tracekit.trace.write import CHUNK_ROWS

__all__ = ["BulkRefused", "arrow_batches", "count_object_lines"]

BLOCK_BYTES = 1 << 20
_SCAN_BYTES = 1 << 26
_NEWLINE, _CLOSE = ord("\n"), ord("}")
_UTF8_BOM = b"\xef\xbb\xbf"


class BulkRefused(Exception):
    """The bulk reader cannot vouch for this input; the line-by-line reader must judge it."""


@cache
def _json_schema() -> pa.Schema:
    as_json = {"int": pa.int64(), "string": pa.string(), "binary": pa.string()}
    return pa.schema([(c.name, as_json[c.kind]) for c in load_spec().columns])


def arrow_batches(source: Path, default_host: str | None) -> Iterator[pa.RecordBatch]:
    """The rows of the JSON Lines file ``source``, batch by batch; `BulkRefused` on any doubt.

    ``default_host`` fills a missing or null ``host``. The line structure is checked after the
    last batch, so a caller must not keep anything it wrote before the iterator is exhausted.
    """
    with open(source, "rb") as handle:
        if handle.read(len(_UTF8_BOM)) == _UTF8_BOM:
            raise BulkRefused("byte-order mark")
    options = pj.ParseOptions(explicit_schema=_json_schema(), unexpected_field_behavior="error")
    try:
        reader = pj.open_json(source, read_options=pj.ReadOptions(block_size=BLOCK_BYTES),
                              parse_options=options)
    except pa.ArrowInvalid as error:
        raise BulkRefused(str(error)) from None
    rows = 0
    for batch in _gathered(reader):
        rows += batch.num_rows
        yield _typed(batch, default_host)
    if rows != count_object_lines(source):
        raise BulkRefused("rows and lines differ")


def _gathered(reader: pj.JSONStreamingReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches (one per block of text) joined into batches of about `CHUNK_ROWS`."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as error:
            raise BulkRefused(str(error)) from None
        pending.append(batch)
        rows += batch.num_rows
        if rows >= CHUNK_ROWS:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _typed(batch: pa.RecordBatch, default_host: str | None) -> pa.RecordBatch:
    spec = load_spec()
    arrays = []
    for column, array in zip(spec.columns, batch.columns):
        if column.kind == "binary":
            array = unhex(array)
        elif column.kind == "string" and array.null_count < len(array):
            try:
                array.validate(full=True)  # Arrow's parser keeps invalid UTF-8; json.loads refuses it
            except pa.ArrowInvalid:
                raise BulkRefused(f"invalid UTF-8 in {column.name}") from None
        if column.name == "host" and default_host is not None and array.null_count:
            array = pc.fill_null(array, pa.scalar(default_host))
        arrays.append(array)
    names = [c.name for c in spec.columns]
    return pa.RecordBatch.from_arrays(arrays, names=names)


_NIBBLES = np.full(256, 255, dtype=np.uint8)
for _digit in range(16):
    _NIBBLES[ord(f"{_digit:x}")] = _NIBBLES[ord(f"{_digit:X}")] = _digit


def unhex(strings: pa.Array) -> pa.Array:
    """Hex strings to bytes, as `bytes.fromhex` reads plain hex digits; `BulkRefused` for any
    other string (odd length, spaces, other characters), which `bytes.fromhex` judges itself."""
    if strings.null_count == len(strings):
        return pa.nulls(len(strings), pa.binary())
    strings = pa.concat_arrays([strings]) if strings.offset else strings
    validity, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[: len(strings) + 1]
    if (np.diff(offsets) % 2).any():
        raise BulkRefused("hex string of odd length")
    digits = np.frombuffer(data_buffer, np.uint8)[offsets[0]:offsets[-1]] if data_buffer else np.empty(0, np.uint8)
    nibbles = _NIBBLES[digits]
    if (nibbles == 255).any():
        raise BulkRefused("not a plain hex string")
    decoded = (nibbles[0::2] << 4) | nibbles[1::2]
    halved = ((offsets - offsets[0]) // 2).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(strings),
                                 [validity, pa.py_buffer(halved), pa.py_buffer(decoded.tobytes())],
                                 null_count=strings.null_count)


def count_object_lines(source: Path) -> int:
    """The non-blank lines of ``source`` (as the line-by-line reader skips blank ones);
    `BulkRefused` if one of them does not end in ``}``."""
    size = source.stat().st_size
    if size == 0:
        return 0
    with open(source, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        text = np.frombuffer(data, np.uint8)
        try:
            ends = np.concatenate([np.flatnonzero(text[at:at + _SCAN_BYTES] == _NEWLINE) + at
                                   for at in range(0, size, _SCAN_BYTES)])
            if text[-1] != _NEWLINE:
                ends = np.append(ends, size)
            starts = np.concatenate(([0], ends[:-1] + 1))
            plain = (ends > starts) & (text[np.maximum(ends - 1, 0)] == _CLOSE)
            blank = 0
            for line in np.flatnonzero(~plain):
                content = data[starts[line]:ends[line]].strip()
                if not content:
                    blank += 1
                elif not content.endswith(b"}"):
                    raise BulkRefused(f"line {line + 1} does not end in }}")
            return len(ends) - blank
        finally:
            del text
