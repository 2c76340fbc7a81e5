"""Turn rows (Python dicts) and foreign Arrow batches into batches of exactly `SCHEMA`.

`conform_batch` is the single gate every row passes on its way into a trace: column kinds, then
`check_batch`'s per-row rules, then a cast to the format's Arrow types (dictionary-encoded strings,
narrow integers) with absent columns filled with typed nulls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TraceFormatError
from tracekit.trace.checks import check_batch, int_bounds, row_error
from tracekit.trace.schema import SCHEMA, Column, load_spec

__all__ = ["rows_to_batch", "conform_batch", "cast_array"]


_WIDE_TYPES = {"int": pa.int64(), "string": pa.string(), "binary": pa.binary()}


def rows_to_batch(
    rows: Sequence[Mapping[str, Any]], *, file: str, lines: Sequence[int] | None = None
) -> pa.RecordBatch:
    """Build a loosely typed batch from dict rows (missing keys are nulls; binary values are bytes).

    Raises `TraceFormatError` naming the row (its line when ``lines`` is given) for an unknown key
    or a value of the wrong Python type. Ranges are checked later, by `conform_batch`.
    """
    spec = load_spec()
    present = set().union(*rows)
    unknown = present - spec.columns_by_name.keys()
    if unknown:
        for index, row in enumerate(rows):
            if not unknown.isdisjoint(row):
                raise _dict_row_error(rows, index, "unknown column", file, min(unknown & set(row)), lines)
    columns = [c for c in spec.columns if c.name in present]
    try:
        for column in columns:
            if column.kind == "binary" and not _all_bytes(rows, column.name):
                raise TypeError(column.name)
        return pa.RecordBatch.from_pylist(rows, schema=pa.schema(
            [(c.name, _WIDE_TYPES[c.kind]) for c in columns]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        pass
    for index, row in enumerate(rows):
        for column in columns:
            problem = _python_value_problem(row.get(column.name), column)
            if problem is not None:
                raise _dict_row_error(rows, index, problem, file, column.name, lines)
    raise AssertionError("Arrow refused rows that look valid")


def _all_bytes(rows: Sequence[Mapping[str, Any]], name: str) -> bool:
    return all(isinstance(row.get(name), (bytes, bytearray, type(None))) for row in rows)


def _python_value_problem(value: Any, column: Column) -> str | None:
    if value is None:
        return None
    if column.kind == "int":
        if isinstance(value, bool) or not isinstance(value, Integral):
            return f"expected an integer, got {value!r}"
        low, high = int_bounds(column)
        if not low <= value <= high:
            return f"{value} is out of range {low}..{high}"
        return None
    if column.kind == "string":
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    return None if isinstance(value, (bytes, bytearray)) else f"expected bytes, got {value!r}"


def _dict_row_error(rows, index: int, message: str, file: str, column: str, lines) -> TraceFormatError:
    if lines is not None:
        return TraceFormatError(message, file=file, line=int(lines[index]), column=column)
    row = rows[index]
    return TraceFormatError(message, file=file, host=row.get("host"), seq=row.get("seq"), column=column)


_KIND_CHECKS = {
    "int": pa.types.is_integer,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
    or (pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))),
    "binary": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t),
}


def conform_batch(
    batch: pa.RecordBatch, *, file: str, lines: Sequence[int] | None = None
) -> pa.RecordBatch:
    """Check every row of ``batch`` and return it with exactly the columns and types of `SCHEMA`."""
    spec = load_spec()
    known = spec.columns_by_name
    for name in batch.schema.names:
        if name not in known:
            raise TraceFormatError("unknown column", file=file, column=name)
    for name, array in zip(batch.schema.names, batch.columns):
        column = known[name]
        if not (pa.types.is_null(array.type) or _KIND_CHECKS[column.kind](array.type)):
            index = _first_valid(array)
            raise row_error(
                batch, index, f"has type {array.type}, expected {column.type_name}",
                file=file, column=name, lines=lines,
            )
    check_batch(batch, file=file, lines=lines)
    if batch.schema.equals(SCHEMA):
        return batch
    present = dict(zip(batch.schema.names, batch.columns))
    arrays = [
        cast_array(present[field.name], field.type) if field.name in present
        else pa.nulls(batch.num_rows, field.type)
        for field in SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _first_valid(array: pa.Array) -> int:
    index = pc.index(array.is_valid(), pa.scalar(True)).as_py()
    return max(index, 0)


def cast_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast ``array`` to ``target``; values were range-checked, so the cast cannot overflow."""
    if array.type == target:
        return array
    if pa.types.is_dictionary(target):
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_null(array.type):
            return pa.nulls(len(array), target)
        encoded = pc.cast(array, target.value_type).dictionary_encode()
        if encoded.type.index_type != target.index_type:
            encoded = pc.cast(encoded, target)
        return encoded
    return pc.cast(array, target)
