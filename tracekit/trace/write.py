"""Write traces: stream rows through the checks into a Parquet file sorted by (host, seq).

Rows are checked batch by batch (`conform_batch`, `SeqTracker`) and spooled to a temporary
Parquet file. A stream already in (host, seq) order (the common case) is then just renamed into
place, with memory bounded by a row group. Otherwise the spool is read back whole and sorted once
by (host, seq) with Arrow (linear in hosts; memory then holds the trace).

Row groups hold whole hosts where they can: one closes at the first host boundary after
`HOST_GROUP_ROWS` rows, and in any case at `ROW_GROUP_ROWS`. So a reader of a few hosts of a
fleet's trace reads only their row groups (`tracekit.trace.read`), and the layout depends only on
the rows, not on how they were batched on the way in.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.trace.convert import conform_batch, rows_to_batch
from tracekit.trace.ordering import SeqTracker, check_sorted_seq
from tracekit.trace.output import atomic_path, remove_path, scratch_path
from tracekit.trace.schema import SCHEMA, SORTED_KEY, TRACE_FORMAT

__all__ = ["write_trace", "write_batches", "file_metadata", "SORTED_KEY", "CHUNK_ROWS"]

CHUNK_ROWS = 65_536
ROW_GROUP_ROWS = 1 << 20
HOST_GROUP_ROWS = 1 << 16

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
        rest = scratch_path(path, ".arrows")
        try:
            tracker = SeqTracker()
            with _RowGroupWriter(spool, schema) as writer, _IpcSpool(rest, schema) as unsorted:
                for batch, lines in batches:
                    batch = conform_batch(batch, file=file, lines=lines)
                    tracker.add(batch, file=file, lines=lines)
                    # rows that will be sorted anyway need not be encoded as Parquet twice
                    (writer if tracker.in_order else unsorted).write(batch)
                if late_metadata is not None:
                    late = {str(k): str(v) for k, v in late_metadata().items()}
                    writer.add_metadata(late)
                    schema = schema.with_metadata({**dict(metadata), **late})
            if tracker.in_order and not partition_by_host:
                spool.rename(final)
            elif tracker.in_order:
                _write_partitioned(final, _pieces_in_order(spool, tracker), schema)
            else:
                table, runs = _sorted_spools(spool, rest, file)
                if partition_by_host:
                    _write_partitioned(final, ((host, table.slice(start, end - start))
                                               for host, start, end in runs), schema)
                else:
                    with _RowGroupWriter(final, schema) as writer:
                        writer.write(table)
        finally:
            remove_path(spool)
            remove_path(rest)
    return path


class _IpcSpool:
    """An Arrow IPC stream (LZ4; a stream, as each batch has a dictionary of its own) for rows
    that will be sorted before they are written; the file exists once a batch is written."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self._schema, self._writer = path, schema, None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self._writer = pa.ipc.new_stream(str(self.path), self._schema, options=options)
        self._writer.write_batch(batch)

    def __enter__(self) -> _IpcSpool:
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()


def _write_partitioned(final: Path, pieces: Iterable[tuple[str, pa.RecordBatch | pa.Table]],
                       schema: pa.Schema) -> None:
    """One ``host=`` directory per host, from pieces in (host, seq) order."""
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


def _sorted_spools(spool: Path, rest: Path, file: str) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    """The rows of both spools sorted once by (host, seq), and each host's (name, start, end) in
    it; a seq that appears twice in a host is refused (the first such host, its smallest one)."""
    with pa.memory_map(str(rest)) as source:
        unsorted = pa.ipc.open_stream(source).read_all()
    table = pa.concat_tables([pq.read_table(spool), unsorted])
    table = table.unify_dictionaries().combine_chunks()
    hosts = table.column("host").chunk(0)
    names = hosts.dictionary.to_pylist()
    by_rank = sorted(names)
    rank_of = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"))
    ranks = rank_of[hosts.indices.to_numpy()]
    seq = table.column("seq").to_numpy()
    order = np.lexsort((seq, ranks))
    ranks, seq = ranks[order], seq[order]
    same_host = ranks[1:] == ranks[:-1]
    repeats = np.flatnonzero(same_host & (seq[1:] == seq[:-1]))
    if len(repeats):
        rank = ranks[repeats[0]]
        check_sorted_seq(by_rank[int(rank)], seq[ranks == rank], file=file)
    starts = np.concatenate(([0], np.flatnonzero(~same_host) + 1)).tolist()
    runs = [(by_rank[int(ranks[start])], start, end) for start, end in zip(starts, starts[1:] + [len(order)])]
    return table.take(pa.array(order)), runs


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
    """A ParquetWriter that gathers batches into row groups of whole hosts where it can: a row
    group closes at the first host boundary after HOST_GROUP_ROWS rows, and at ROW_GROUP_ROWS."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema)
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._last_host: str | None = None

    def write(self, piece: pa.RecordBatch | pa.Table) -> None:
        batches = piece.to_batches() if isinstance(piece, pa.Table) else [piece]
        for batch in batches:
            starts = self._host_starts(batch)
            offset = 0
            while offset < batch.num_rows:
                allowed = np.searchsorted(starts, offset + max(HOST_GROUP_ROWS - self._rows, 0))
                if allowed == len(starts):
                    self._add(batch.slice(offset))
                    break
                cut = int(starts[allowed])
                self._add(batch.slice(offset, cut - offset))
                if self._rows >= HOST_GROUP_ROWS:
                    self._flush()
                offset = cut

    def _host_starts(self, batch: pa.RecordBatch) -> np.ndarray:
        """Positions in ``batch`` where a new host starts (0 if it differs from the last row)."""
        if "host" not in batch.schema.names or batch.num_rows == 0:
            return np.zeros(0, np.int64)
        hosts = batch.column("host")
        if not pa.types.is_dictionary(hosts.type) or len(pc.unique(hosts.dictionary)) != len(hosts.dictionary):
            hosts = pc.cast(hosts, pa.string()).dictionary_encode()
        codes = hosts.indices.to_numpy()
        starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        first = hosts.dictionary[codes[0]].as_py()
        if self._last_host is not None and first != self._last_host:
            starts = np.concatenate(([0], starts))
        self._last_host = hosts.dictionary[codes[-1]].as_py()
        return starts

    def _add(self, segment: pa.RecordBatch) -> None:
        while segment.num_rows:
            take = min(segment.num_rows, ROW_GROUP_ROWS - self._rows)
            self._pending.append(segment.slice(0, take))
            self._rows += take
            segment = segment.slice(take)
            if self._rows == ROW_GROUP_ROWS:
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
