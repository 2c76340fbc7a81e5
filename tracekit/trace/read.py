"""Read traces: a Parquet file or a directory of them (hive-partitioned by ``host=``).

`iter_batches` is the streaming reader everything else builds on: batches with every requested
column (absent columns as typed nulls), in (host, seq) order, memory bounded by one batch for
files the tracekit writer produced.
"""

from __future__ import annotations

import bisect
import os
import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import TraceFormatError, TracekitError
from tracekit.trace.convert import cast_array
from tracekit.trace.schema import SCHEMA, SORTED_KEY, TRACE_FORMAT

__all__ = ["Part", "trace_parts", "trace_hosts", "open_part", "iter_batches", "read_metadata", "read_trace",
           "file_metadata_of", "host_row_groups"]

_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Part:
    """One Parquet file of a trace; ``host`` is set when the file sits in a ``host=`` directory."""

    path: Path
    host: str | None


def trace_parts(path: str | os.PathLike[str]) -> list[Part]:
    """The files of a trace, hosts in sorted order for a partitioned directory."""
    path = Path(path)
    if not path.exists():
        raise TracekitError(f"{path}: no such file or directory")
    if not path.is_dir():
        return [Part(path, None)]
    parts = []
    for file in sorted(path.rglob("*.parquet")):
        relative = file.relative_to(path).parts
        if any(piece.startswith((".", "_")) for piece in relative):
            continue
        hosts = [unquote(piece[5:]) for piece in relative[:-1] if piece.startswith("host=")]
        parts.append(Part(file, hosts[-1] if hosts else None))
    if not parts:
        raise TracekitError(f"{path}: directory holds no .parquet files")
    return sorted(parts, key=lambda part: (part.host or "", str(part.path)))


def open_part(part: Part, read_dictionary: Sequence[str] = ()) -> pq.ParquetFile:
    """Open one file of a trace, refusing what is not a Parquet file of this format version;
    the columns ``read_dictionary`` names are read dictionary-encoded."""
    file = str(part.path)
    with open(part.path, "rb") as handle:
        head = handle.read(4)
    if head != _PARQUET_MAGIC:
        hint = " (JSON Lines? convert it with `tracekit normalize`)" if head[:1] in (b"{", b"\n", b" ") else ""
        raise TraceFormatError(f"not a Parquet file{hint}", file=file)
    try:
        # pre_buffer=True keeps every pre-buffered column chunk of the file until it is closed:
        # streaming a 100M-row trace would grow to gigabytes (and it is slower on local files)
        parquet = pq.ParquetFile(part.path, pre_buffer=False,
                                 read_dictionary=list(read_dictionary) or None)
    except (pa.ArrowException, OSError) as error:
        raise TraceFormatError(f"not a readable Parquet file (truncated or corrupt?): {str(error).strip()}", file=file) from None
    found = file_metadata_of(parquet).get("tracekit.format")
    if found is None:
        raise TraceFormatError(f"no tracekit.format metadata: not a {TRACE_FORMAT} trace", file=file)
    if found != TRACE_FORMAT:
        raise TraceFormatError(f"format is {found!r}; this tracekit reads {TRACE_FORMAT!r}", file=file)
    return parquet


def file_metadata_of(parquet: pq.ParquetFile) -> dict[str, str]:
    raw = parquet.metadata.metadata or {}
    return {
        key.decode("utf-8", "replace"): value.decode("utf-8", "replace")
        for key, value in raw.items()
        if not key.startswith(b"ARROW:")
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The trace's file key-value metadata (``tracekit.format``, ``tracekit.source``, ...)."""
    return file_metadata_of(open_part(trace_parts(path)[0]))


def iter_batches(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    batch_size: int = 65_536,
    hosts: Collection[str] | None = None,
    dictionaries: Collection[str] = (),
) -> Iterator[pa.RecordBatch]:
    """Stream the trace's rows in (host, seq) order as batches of the format's Arrow types.

    ``columns`` picks columns (default: every column of `SCHEMA`); a column the file lacks comes
    back all null. ``hosts`` keeps only those hosts' rows (a ``host=`` directory of another host
    is not even opened). ``dictionaries`` names string columns to return dictionary-encoded, as
    Parquet stores them (for a reader that compares their values rather than reading them: it
    saves decoding every string). Files the tracekit writer produced stream with bounded memory;
    a file stored in another order is sorted in memory first.
    """
    parts = trace_parts(path)
    partitioned = all(part.host is not None for part in parts)
    if hosts is not None and not partitioned:
        yield from _rows_of_hosts(path, columns, batch_size, hosts, dictionaries)
        return
    if hosts is not None:
        parts = [part for part in parts if part.host in hosts]
    fields = _encoded(_fields(columns), dictionaries)
    by_host: dict[str | None, list[Part]] = {}
    for part in parts:
        by_host.setdefault(part.host, []).append(part)
    if None in by_host and len(by_host) > 1:
        raise TracekitError(f"{path}: mixes files inside and outside host= directories")
    for host_parts in by_host.values():
        if len(host_parts) == 1:
            yield from _part_batches(host_parts[0], fields, batch_size)
        else:
            table = pa.concat_tables(_read_whole(part, fields) for part in host_parts)
            yield from _sorted(table, fields).to_batches(max_chunksize=batch_size)


def _rows_of_hosts(path: str | os.PathLike[str], columns: Sequence[str] | None, batch_size: int,
                   hosts: Collection[str],
                   dictionaries: Collection[str] = ()) -> Iterator[pa.RecordBatch]:
    """The rows of ``hosts`` from a trace whose files hold several hosts each: from a single
    file, only the row groups whose host statistics can hold one of them are read."""
    wanted = sorted(hosts)
    names = None if columns is None else [f.name for f in _with_sort_keys(_fields(columns))]
    parts = trace_parts(path)
    if len(parts) == 1:
        part = parts[0]
        batches = _part_batches(part, _encoded(_fields(names), dictionaries), batch_size,
                                row_groups=host_row_groups(open_part(part), wanted))
    else:
        batches = iter_batches(path, names, batch_size, dictionaries=dictionaries)
    value_set = pa.array(wanted, pa.string())
    for batch in batches:
        kept = _of_hosts(batch, value_set)
        if kept.num_rows:
            yield kept if columns is None else kept.select(list(columns))


def _of_hosts(batch: pa.RecordBatch, value_set: pa.Array) -> pa.RecordBatch:
    """The rows of `batch` whose host is in `value_set`: a slice where they are consecutive (a
    run of a sorted file's hosts), else a copy. The host column is dictionary-encoded (`SCHEMA`),
    so which rows to keep is worked out once per host name, not once per row."""
    column = batch.column("host")
    if pa.types.is_dictionary(column.type):
        wanted = pc.is_in(column.dictionary, value_set=value_set).to_numpy(zero_copy_only=False)
        mask = wanted[column.indices.to_numpy(zero_copy_only=False)]
    else:
        mask = pc.is_in(column, value_set=value_set).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(mask)
    if not len(at):
        return batch.slice(0, 0)
    if at[-1] - at[0] + 1 == len(at):
        return batch.slice(int(at[0]), len(at))
    return batch.filter(pa.array(mask))


def host_row_groups(parquet: pq.ParquetFile, hosts: Sequence[str]) -> list[int]:
    """The row groups of ``parquet`` that may hold rows of ``hosts`` (sorted): those whose
    ``host`` min/max statistics bracket one of them, and those without statistics."""
    metadata = parquet.metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if "host" not in names:
        return list(range(metadata.num_row_groups))
    column = names.index("host")
    kept = []
    for index in range(metadata.num_row_groups):
        statistics = metadata.row_group(index).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            kept.append(index)
            continue
        low, high = _text(statistics.min), _text(statistics.max)
        at = bisect.bisect_left(hosts, low)
        if at < len(hosts) and hosts[at] <= high:
            kept.append(index)
    return kept


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def trace_hosts(path: str | os.PathLike[str]) -> list[str]:
    """The hosts of a trace, sorted: replay state is per host, so a host is the unit of work."""
    parts = trace_parts(path)
    if all(part.host is not None for part in parts):
        return sorted({part.host for part in parts if part.host is not None})
    found: set[str] = set()
    for part in parts:
        parquet = open_part(part)
        for batch in parquet.iter_batches(columns=["host"]):
            column = batch.column(0)
            values = column.dictionary if isinstance(column, pa.DictionaryArray) else pc.unique(column)
            found.update(v for v in values.to_pylist() if v is not None)
    return sorted(found)


def read_trace(path: str | os.PathLike[str], columns: Sequence[str] | None = None):
    """The whole trace as a `pandas.DataFrame` (nullable integer columns, categorical strings)."""
    import pandas as pd

    batches = list(iter_batches(path, columns))
    schema = pa.schema(_fields(columns))
    table = pa.Table.from_batches(batches, schema=schema)
    integers = {
        pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint32(): pd.UInt32Dtype(),
    }
    return table.to_pandas(types_mapper=integers.get)


def _fields(columns: Sequence[str] | None) -> list[pa.Field]:
    if columns is None:
        return list(SCHEMA)
    unknown = [name for name in columns if name not in SCHEMA.names]
    if unknown:
        raise TracekitError(f"unknown trace column {unknown[0]!r}; columns are {', '.join(SCHEMA.names)}")
    return [SCHEMA.field(name) for name in columns]


def _encoded(fields: list[pa.Field], dictionaries: Collection[str]) -> list[pa.Field]:
    """``fields`` with the string columns named in ``dictionaries`` dictionary-encoded."""
    return [f.with_type(pa.dictionary(pa.int32(), f.type))
            if f.name in dictionaries and f.type == pa.string() else f for f in fields]


def _part_batches(part: Part, fields: list[pa.Field], batch_size: int,
                  row_groups: Sequence[int] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of one file in (host, seq) order; a sorted file streams, reading only
    ``row_groups`` when given (another file is read whole and sorted)."""
    parquet = open_part(part)
    encoded = [f.name for f in fields if f.name in parquet.schema_arrow.names
               and pa.types.is_dictionary(f.type) and SCHEMA.field(f.name).type == pa.string()]
    if encoded:
        parquet = open_part(part, read_dictionary=encoded)
    if file_metadata_of(parquet).get(SORTED_KEY) == "host,seq" or _stored_in_order(parquet, part):
        present = [f.name for f in fields if f.name in parquet.schema_arrow.names]
        if row_groups is not None and not row_groups:
            return
        empty = _null_columns(parquet, present, row_groups)
        present = [name for name in present if name not in empty] or present[:1]
        # decoded in `_prefetched`'s thread, ahead of the consumer: one thread keeps up, and
        # costs less CPU than Arrow's pool (columns decoded in parallel, then synchronized)
        batches = (_complete(batch, fields, part.host)
                   for batch in parquet.iter_batches(batch_size=batch_size, columns=present,
                                                     row_groups=row_groups, use_threads=False))
        try:
            yield from _prefetched(batches)
        except (pa.ArrowException, OSError) as error:
            raise TraceFormatError(f"cannot read (truncated or corrupt?): {str(error).strip()}", file=str(part.path)) from None
        return
    yield from _sorted(_read_whole(part, fields), fields).to_batches(max_chunksize=batch_size)


def _null_columns(parquet: pq.ParquetFile, names: list[str],
                  row_groups: Sequence[int] | None) -> set[str]:
    """The columns among ``names`` whose statistics say every value of the row groups read is
    null: not decoded at all (`_complete` makes their nulls)."""
    metadata = parquet.metadata
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    groups = range(metadata.num_row_groups) if row_groups is None else row_groups
    empty = set()
    for name in names:
        if name not in index:
            continue
        for g in groups:
            group = metadata.row_group(g)
            stats = group.column(index[name]).statistics
            if stats is None or not stats.has_null_count or stats.null_count != group.num_rows:
                break
        else:
            empty.add(name)
    return empty


_PREFETCH = 2
_DONE = object()


def _prefetched(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`batches`, decoded in a thread up to `_PREFETCH` batches ahead of the consumer: Parquet
    decoding releases the GIL, so it overlaps whatever the consumer does with each batch."""
    ready: queue.Queue = queue.Queue(maxsize=_PREFETCH)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            offer(error)

    thread = threading.Thread(target=produce, name="tracekit-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _read_whole(part: Part, fields: list[pa.Field]) -> pa.Table:
    """All rows of one file with ``fields``, plus host and seq for sorting."""
    parquet = open_part(part)
    with_keys = _with_sort_keys(fields)
    present = [f.name for f in with_keys if f.name in parquet.schema_arrow.names]
    try:
        table = parquet.read(columns=present)
    except (pa.ArrowException, OSError) as error:
        raise TraceFormatError(f"cannot read (truncated or corrupt?): {str(error).strip()}", file=str(part.path)) from None
    batches = [_complete(batch, with_keys, part.host) for batch in table.to_batches()]
    return pa.Table.from_batches(batches, schema=pa.schema(with_keys))


def _with_sort_keys(fields: list[pa.Field]) -> list[pa.Field]:
    names = {f.name for f in fields}
    return fields + [SCHEMA.field(name) for name in ("host", "seq") if name not in names]


def _sorted(table: pa.Table, fields: list[pa.Field]) -> pa.Table:
    keys = pa.table({"host": pc.cast(table.column("host"), pa.string()), "seq": table.column("seq")})
    order = pc.sort_indices(keys, sort_keys=[("host", "ascending"), ("seq", "ascending")])
    return table.take(order).select([f.name for f in fields])


def _stored_in_order(parquet: pq.ParquetFile, part: Part) -> bool:
    names = [n for n in ("host", "seq") if n in parquet.schema_arrow.names]
    if "seq" not in names:
        raise TraceFormatError("required column is missing", file=str(part.path), column="seq")
    keys = parquet.read(columns=names)
    seq = keys.column("seq").to_numpy()
    if part.host is not None or "host" not in names:
        return bool(np.all(np.diff(seq) > 0))
    hosts = pc.cast(keys.column("host"), pa.string()).to_numpy(zero_copy_only=False)
    same = hosts[1:] == hosts[:-1]
    return bool(np.all((hosts[1:] > hosts[:-1]) | (same & (np.diff(seq) > 0))))


def _complete(batch: pa.RecordBatch, fields: list[pa.Field], host: str | None) -> pa.RecordBatch:
    """``batch`` with exactly ``fields``: absent columns as typed nulls, foreign types cast."""
    present = dict(zip(batch.schema.names, batch.columns))
    rows = batch.num_rows
    arrays = []
    for field in fields:
        if field.name == "host" and host is not None and "host" not in present:
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([host])))
        elif field.name in present:
            arrays.append(cast_array(present[field.name], field.type))
        else:
            arrays.append(pa.nulls(rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
