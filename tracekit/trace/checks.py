"""Vectorized checks of one record batch against the format: the rules a valid row keeps.

Every check runs over whole columns with `pyarrow.compute`; only when a check fails does the code
look up the first offending row to name it. Row order rules (``seq`` within a host) span batches
and live in `tracekit.trace.ordering`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TraceFormatError
from tracekit.trace.schema import Column, load_spec

__all__ = ["check_batch", "row_error", "int_bounds", "is_ip_text", "ROW_RULES", "Problem"]

_INT_LIMITS = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}


def int_bounds(column: Column) -> tuple[int, int]:
    """The values an integer column accepts: its constraint within what its Arrow type holds."""
    low, high = _INT_LIMITS[column.arrow_type]
    if column.min is not None:
        low = max(low, column.min)
    if column.max is not None:
        high = min(high, column.max)
    return low, high


def row_error(
    batch: pa.RecordBatch,
    index: int,
    message: str,
    *,
    file: str,
    column: str | None,
    lines: Sequence[int] | None = None,
) -> TraceFormatError:
    """A `TraceFormatError` naming row ``index`` of ``batch`` by its line, or by host and seq."""
    if lines is not None:
        return TraceFormatError(message, file=file, line=int(lines[index]), column=column)
    names = batch.schema.names
    host = batch.column("host")[index].as_py() if "host" in names else None
    seq = batch.column("seq")[index].as_py() if "seq" in names else None
    return TraceFormatError(message, file=file, host=host, seq=seq, column=column)


Problem = tuple[int, str, str]
"""A rule's finding: (row index in the batch, column, message)."""


def check_batch(batch: pa.RecordBatch, *, file: str, lines: Sequence[int] | None = None) -> None:
    """Raise `TraceFormatError` for the first row of ``batch`` that breaks a per-row rule.

    The rules (`ROW_RULES`): required columns non-null, values within their column's range or
    set, addresses that are IPv4 or IPv6 text, known event names and the columns each event
    requires. Column types must already be of the right kind (integer, string, binary); see
    `tracekit.trace.convert`. Each rule looks at whole columns; the message names the earliest
    offending row among every rule's findings.
    """
    spec = load_spec()
    for column in spec.columns:
        if column.required and column.name not in batch.schema.names:
            raise TraceFormatError("required column is missing", file=file, column=column.name)
    problems = [problem for rule in ROW_RULES for problem in rule(batch)]
    if problems:  # the earliest row; on a tie, the first rule's (and column's) finding
        index, name, message = min(problems, key=lambda p: p[0])
        raise row_error(batch, index, message, file=file, column=name, lines=lines)


def _present_columns(batch: pa.RecordBatch) -> list[tuple[Column, pa.Array]]:
    return [(c, batch.column(c.name)) for c in load_spec().columns if c.name in batch.schema.names]


def _column_problems(batch: pa.RecordBatch) -> list[Problem]:
    """Per column, in the format's column order: a null where it is required, a value out of range."""
    problems = []
    for column, array in _present_columns(batch):
        if column.required and array.null_count:
            problems.append((_first_true(array.is_null()), column.name, "missing (required in every row)"))
        problem = _value_problem(array, column)
        if problem is not None:
            problems.append(problem)
    return problems


def _first_true(mask: pa.Array) -> int:
    return pc.index(mask, pa.scalar(True)).as_py()


def _value_problem(array: pa.Array, column: Column) -> Problem | None:
    if array.null_count == len(array):
        return None
    if column.format == "ip":
        return _address_problem(array, column)
    if column.values is not None:
        bad = _not_in(array, column.values)
        if bad is None:
            return None
        index = _first_true(bad)
        return index, column.name, f"{array[index].as_py()!r} is not {column.describe_range()}"
    if column.kind != "int":
        return None
    low, high = int_bounds(column)
    type_low, type_high = _INT_LIMITS[array.type]
    if low <= type_low and type_high <= high:
        return None
    extremes = pc.min_max(array)
    if low <= extremes["min"].as_py() and extremes["max"].as_py() <= high:
        return None
    bad = pc.or_(pc.less(array, pa.scalar(low)), pc.greater(array, pa.scalar(high)))
    index = _first_true(bad)
    return index, column.name, f"{array[index].as_py()} is out of range {low}..{high}"


def _not_in(array: pa.Array, values: tuple) -> pa.Array | None:
    """Rows whose value is not null and not in ``values``; None when there is none."""
    if pa.types.is_dictionary(array.type):
        outside = pc.invert(pc.is_in(array.dictionary, value_set=pa.array(values)))
        if not pc.any(outside).as_py():
            return None
        return pc.take(outside, array.indices).fill_null(False)
    outside = pc.invert(pc.is_in(array, value_set=pa.array(values, type=array.type)))
    if array.null_count:
        outside = pc.and_(outside, array.is_valid())
    return outside if pc.any(outside).as_py() else None


def _address_problem(array: pa.Array, column: Column) -> Problem | None:
    """The first row whose text is not an IPv4 or IPv6 address; each distinct text parsed once."""
    texts = array.dictionary if pa.types.is_dictionary(array.type) else pc.unique(array)
    bad = [text for text in texts.to_pylist() if text is not None and not is_ip_text(text)]
    if not bad:
        return None
    mask = pc.is_in(array.dictionary_decode() if pa.types.is_dictionary(array.type) else array,
                    value_set=pa.array(bad, type=pa.string()))
    index = _first_true(mask.fill_null(False))
    if index < 0:  # only in unused dictionary entries
        return None
    return index, column.name, f"{array[index].as_py()!r} is not an IPv4 or IPv6 address"


@lru_cache(maxsize=4096)
def is_ip_text(text: str) -> bool:
    """IPv4 dotted quad or IPv6 text (with an optional `%scope`), as `ipaddress` reads them."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@cache
def _requirements() -> tuple[dict[str, frozenset[str]], tuple[str, ...]]:
    spec = load_spec()
    requires = {event.name: frozenset(event.requires) for event in spec.events}
    columns = tuple(c.name for c in spec.columns if any(c.name in r for r in requires.values()))
    return requires, columns


def _event_problems(batch: pa.RecordBatch) -> list[Problem]:
    if "event" not in batch.schema.names:
        return []
    events = batch.column("event")
    if not pa.types.is_dictionary(events.type):
        events = events.dictionary_encode()
    names = events.dictionary.to_pylist()
    requires, required_columns = _requirements()
    problems = []
    unknown = [name not in requires for name in names]
    if any(unknown):
        index = _first_true(pc.take(pa.array(unknown), events.indices).fill_null(False))
        problems.append((index, "event", f"unknown event {names[events.indices[index].as_py()]!r}"))
    for column in required_columns:
        present = column in batch.schema.names
        if present and batch.column(column).null_count == 0:
            continue
        needs = [column in requires.get(name, ()) for name in names]
        if not any(needs):
            continue
        rows_needing = pc.take(pa.array(needs), events.indices).fill_null(False)
        bad = pc.and_(rows_needing, batch.column(column).is_null()) if present else rows_needing
        index = _first_true(bad)
        if index >= 0:
            event = names[events.indices[index].as_py()]
            problems.append((index, column, f"missing (event {event!r} requires it)"))
    return problems


ROW_RULES: tuple[Callable[[pa.RecordBatch], list[Problem]], ...] = (
    _column_problems, _event_problems,
)
"""Every per-row rule, each a function of a whole batch. A new rule (say, address syntax)
goes here; both normalize readers, `write_trace` and `validate` then apply it."""
