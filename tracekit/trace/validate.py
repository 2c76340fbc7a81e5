"""Check a whole trace against the format and summarise it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TraceFormatError
from tracekit.trace.convert import conform_batch
from tracekit.trace.ordering import SeqTracker, check_sorted_seq
from tracekit.trace.read import Part, file_metadata_of, open_part, trace_parts
from tracekit.trace.schema import SCHEMA, SORTED_KEY, load_spec

__all__ = ["HostSummary", "TraceSummary", "validate_trace"]


@dataclass(frozen=True)
class HostSummary:
    host: str
    rows: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class TraceSummary:
    """What `validate_trace` found in a valid trace; renders itself with rich."""

    path: str
    format: str
    rows: int
    hosts: tuple[HostSummary, ...]
    events: tuple[tuple[str, int], ...]
    metadata: tuple[tuple[str, str], ...]
    extra_columns: tuple[str, ...] = ()

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        layers = {event.name: event.layer for event in load_spec().events}
        plural = "s" if len(self.hosts) != 1 else ""
        title = Text.assemble(
            ("valid ", "bold green"), (self.format, "bold"),
            f" trace: {self.rows} rows, {len(self.hosts)} host{plural}\n", (self.path, "dim"),
        )
        hosts = Table("host", "rows", "seq range", title="hosts", title_justify="left")
        for host in self.hosts:
            hosts.add_row(host.host, str(host.rows), f"{host.first_seq}..{host.last_seq}")
        events = Table("event", "layer", "rows", title="events", title_justify="left")
        for name, count in self.events:
            events.add_row(name, layers.get(name, "?"), str(count))
        metadata = Table("key", "value", title="metadata", title_justify="left")
        for key, value in self.metadata:
            metadata.add_row(key, value)
        parts = [title, hosts, events, metadata]
        if self.extra_columns:
            parts.append(Text(f"columns outside the format (ignored): {', '.join(self.extra_columns)}"))
        return Group(*parts)


def validate_trace(path: str | os.PathLike[str]) -> TraceSummary:
    """Check every row of the trace at ``path``; raise `TraceFormatError` on the first bad one.

    Checks: Parquet and ``tracekit.format``, columns and their types, known events and the
    columns each requires, value ranges, and seq strictly increasing within each host.
    """
    parts = trace_parts(path)
    tracker = SeqTracker()
    events: Counter[str] = Counter()
    metadata: dict[str, str] | None = None
    extra: set[str] = set()
    for part in parts:
        parquet = open_part(part)
        part_metadata = file_metadata_of(parquet)
        metadata = part_metadata if metadata is None else metadata
        names = parquet.schema_arrow.names
        extra.update(name for name in names if name not in SCHEMA.names)
        disordered_before = not tracker.in_order
        for batch in _checked_batches(part, parquet, [n for n in names if n in SCHEMA.names]):
            tracker.add(batch, file=str(part.path))
            _count_events(batch, events)
        if not tracker.in_order and not disordered_before and part_metadata.get(SORTED_KEY) == "host,seq":
            error = tracker.first_disorder
            raise TraceFormatError(
                f"{error.message}, though the file's {SORTED_KEY} metadata says they are",
                file=error.file, host=error.host, seq=error.seq, column=error.column,
            )
    _check_unordered_hosts(parts, tracker.unordered_hosts)
    hosts = tuple(
        HostSummary(host, r.rows, r.min_seq, r.max_seq) for host, r in sorted(tracker.hosts.items())
    )
    return TraceSummary(
        path=str(path),
        format=(metadata or {}).get("tracekit.format", ""),
        rows=sum(h.rows for h in hosts),
        hosts=hosts,
        events=tuple(sorted(events.items())),
        metadata=tuple(sorted((metadata or {}).items())),
        extra_columns=tuple(sorted(extra)),
    )


def _checked_batches(part: Part, parquet, columns: list[str]):
    file = str(part.path)
    try:
        for batch in parquet.iter_batches(columns=columns):
            if part.host is not None and "host" not in batch.schema.names:
                host = pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(batch.num_rows, np.int32)), pa.array([part.host]))
                batch = batch.append_column("host", host)
            yield conform_batch(batch, file=file)
    except (pa.ArrowException, OSError) as error:
        raise TraceFormatError(f"cannot read (truncated or corrupt?): {str(error).strip()}", file=file) from None


def _count_events(batch: pa.RecordBatch, events: Counter[str]) -> None:
    counts = pc.value_counts(batch.column("event").dictionary_decode())
    for item in counts.to_pylist():
        events[item["values"]] += item["counts"]


def _check_unordered_hosts(parts: list[Part], hosts: set[str]) -> None:
    """Rows of these hosts came out of seq order, which is allowed; a repeated seq is not."""
    for host in sorted(hosts):
        seqs, file = [], str(parts[0].path)
        for part in parts:
            if part.host not in (None, host):
                continue
            table = open_part(part).read(columns=["seq"] if part.host else ["host", "seq"])
            if part.host is None:
                table = table.filter(pc.equal(pc.cast(table.column("host"), pa.string()), host))
            seqs.append(table.column("seq").to_numpy())
            file = str(part.path)
        check_sorted_seq(host, np.sort(np.concatenate(seqs)), file=file)
