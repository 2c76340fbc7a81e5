"""Write traces: stream rows through the checks into a Parquet file sorted by (host, seq).

Rows are checked batch by batch (`conform_batch`, `SeqTracker`) and spooled to a temporary
Parquet file, so memory stays bounded whatever the trace's size. A stream already in (host, seq)
order (the common case) is then just renamed into place. Otherwise a second pass regroups the
spool host by host, sorting in memory only the hosts whose rows came out of seq order.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.trace.convert import conform_batch, rows_to_batch
from tracekit.trace.ordering import SeqTracker, check_sorted_seq
from tracekit.trace.output import atomic_path, remove_path, scratch_path
from tracekit.trace.schema import SCHEMA, TRACE_FORMAT

__all__ = ["write_trace", "write_batches", "file_metadata", "SORTED_KEY", "CHUNK_ROWS"]

SORTED_KEY = "tracekit.sorted_by"
CHUNK_ROWS = 65_536
ROW_GROUP_ROWS = 1 << 20

Located = tuple[pa.RecordBatch, Sequence[int] | None]


def write_trace(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any]] | Iterable[pa.RecordBatch] | pa.Table | pa.RecordBatch,
    metadata: Mapping[str, str] | None = None,
    *,
    source: str,
    partition_by_host: bool = False,
    late_metadata: Callable[[], Mapping[str, str]] | None = None,
) -> Path:
    """Check ``rows`` and write them as a trace at ``path``; return the path.

    ``rows`` is an iterable of dicts (the spec's column names as keys, missing keys are nulls,
    ``payload``/``prog`` as bytes), an iterable of `pyarrow.RecordBatch`, or a `pyarrow.Table`.
    ``metadata`` adds file key-value metadata (e.g. ``tracekit.kernel``); ``source`` is stored as
    ``tracekit.source``. With ``partition_by_host`` the trace is a directory hive-partitioned by
    ``host=``. Raises `TraceFormatError` naming the first bad row; nothing is left at ``path``
    then (an existing file there is kept as it was). ``late_metadata()`` is called once every
    row is consumed, for keys known only then (a capture's counts); they join the file metadata.
    """
    path = Path(path)
    return write_batches(
        path, _located_batches(rows, file=str(path)), file_metadata(metadata, source),
        file=str(path), partition_by_host=partition_by_host, late_metadata=late_metadata,
    )


def file_metadata(metadata: Mapping[str, str] | None, source: str) -> dict[str, str]:
    """The key-value metadata of a trace file: the caller's keys plus the format's own."""
    merged = {str(k): str(v) for k, v in (metadata or {}).items()}
    if merged.get("tracekit.format", TRACE_FORMAT) != TRACE_FORMAT:
        raise TracekitError(f"cannot write tracekit.format={merged['tracekit.format']!r}; this tracekit writes {TRACE_FORMAT!r}")
    merged.update({"tracekit.format": TRACE_FORMAT, "tracekit.source": source, SORTED_KEY: "host,seq"})
    return merged


def write_batches(
    path: Path,
    batches: Iterable[Located],
    metadata: Mapping[str, str],
    *,
    file: str,
    partition_by_host: bool = False,
    late_metadata: Callable[[], Mapping[str, str]] | None = None,
) -> Path:
    """Write loosely typed batches, each with the input line of every row (or None)."""
    schema = SCHEMA.with_metadata(dict(metadata))
    with atomic_path(path) as final:
        spool = scratch_path(path, ".spool")
        try:
            tracker = SeqTracker()
            with _RowGroupWriter(spool, schema) as writer:
                for batch, lines in batches:
                    batch = conform_batch(batch, file=file, lines=lines)
                    tracker.add(batch, file=file, lines=lines)
                    writer.write(batch)
                if late_metadata is not None:
                    late = {str(k): str(v) for k, v in late_metadata().items()}
                    writer.add_metadata(late)
                    schema = schema.with_metadata({**dict(metadata), **late})
            if tracker.in_order and not partition_by_host:
                spool.rename(final)
            else:
                _regroup(spool, final, tracker, schema, file=file, partition_by_host=partition_by_host)
        finally:
            remove_path(spool)
    return path


def _regroup(spool: Path, final: Path, tracker: SeqTracker, schema: pa.Schema, *, file: str,
             partition_by_host: bool) -> None:
    pieces = _pieces_in_order(spool, tracker) if tracker.in_order else _pieces_sorted(spool, tracker, file)
    if not partition_by_host:
        with _RowGroupWriter(final, schema) as writer:
            for _host, piece in pieces:
                writer.write(piece)
        return
    final.mkdir()
    host_schema = schema.remove(schema.get_field_index("host"))
    for host, host_pieces in itertools.groupby(pieces, key=lambda item: item[0]):
        directory = final / f"host={quote(host, safe='')}"
        directory.mkdir()
        with _RowGroupWriter(directory / "part-0.parquet", host_schema) as writer:
            for _host, piece in host_pieces:
                writer.write(piece.drop_columns(["host"]))


def _pieces_in_order(spool: Path, tracker: SeqTracker) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Batches of a spool already sorted by (host, seq), cut where the host changes."""
    hosts = iter(sorted(tracker.hosts))
    host, remaining = None, 0
    for batch in pq.ParquetFile(spool).iter_batches(batch_size=CHUNK_ROWS):
        offset = 0
        while offset < batch.num_rows:
            if remaining == 0:
                host = next(hosts)
                remaining = tracker.hosts[host].rows
            take = min(remaining, batch.num_rows - offset)
            yield host, batch.slice(offset, take)
            offset += take
            remaining -= take


def _pieces_sorted(spool: Path, tracker: SeqTracker,
                   file: str) -> Iterator[tuple[str, pa.Table | pa.RecordBatch]]:
    """Each host's rows, read back from the spool one host at a time: streamed in spool order
    when the host's own rows came in seq order (hosts interleaved in time, as a capture writes
    them), else read whole and sorted by seq."""
    dataset = ds.dataset(spool, format="parquet")
    for host in sorted(tracker.hosts):
        chosen = pc.field("host") == host
        if host not in tracker.unordered_hosts:
            for batch in dataset.to_batches(filter=chosen, batch_size=CHUNK_ROWS, use_threads=False):
                if batch.num_rows:
                    yield host, batch
            continue
        table = dataset.to_table(filter=chosen)
        table = table.take(pc.sort_indices(table.column("seq")))
        check_sorted_seq(host, table.column("seq").to_numpy(), file=file)
        yield host, table


def _located_batches(rows: Any, *, file: str) -> Iterator[Located]:
    if isinstance(rows, pa.Table):
        for batch in rows.to_batches(max_chunksize=CHUNK_ROWS):
            yield batch, None
        return
    if isinstance(rows, pa.RecordBatch):
        yield rows, None
        return
    iterator = iter(rows)
    for first in iterator:
        items = itertools.chain([first], iterator)
        if isinstance(first, pa.RecordBatch):
            for batch in items:
                if not isinstance(batch, pa.RecordBatch):
                    raise TypeError(f"rows mixes RecordBatch and {type(batch).__name__}")
                yield batch, None
        elif isinstance(first, Mapping):
            while chunk := list(itertools.islice(items, CHUNK_ROWS)):
                yield rows_to_batch(chunk, file=file), None
        else:
            raise TypeError(f"rows must be dicts or pyarrow RecordBatches, not {type(first).__name__}")


class _RowGroupWriter:
    """A ParquetWriter that gathers small batches into row groups of about ROW_GROUP_ROWS."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema)
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def write(self, piece: pa.RecordBatch | pa.Table) -> None:
        batches = piece.to_batches() if isinstance(piece, pa.Table) else [piece]
        for batch in batches:
            self._pending.append(batch)
            self._rows += batch.num_rows
            if self._rows >= ROW_GROUP_ROWS:
                self._flush()

    def add_metadata(self, metadata: Mapping[str, str]) -> None:
        """Key-value metadata known only after the rows (written into the file's footer)."""
        self._writer.add_key_value_metadata(dict(metadata))

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self._schema)
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            self._pending, self._rows = [], 0

    def __enter__(self) -> _RowGroupWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self._flush()
        self._writer.close()
