"""Where a trace's hosts lie: rows per host, and which hosts share row groups.

The unit of parallel work on a fleet's trace is a run of whole hosts; a run is cheap to read when
it covers whole row groups (or ``host=`` directories). `host_rows` tells a planner both: each
host's row count and its *unit*, a number shared by hosts that sit in the same chain of row
groups (the tracekit writer closes a row group at a host boundary, so a unit is one row group
unless a host is larger than one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace.read import file_metadata_of, open_part, trace_parts
from tracekit.trace.schema import SORTED_KEY

__all__ = ["HostRows", "host_rows"]


@dataclass(frozen=True)
class HostRows:
    host: str
    rows: int
    unit: int


def host_rows(path: str | os.PathLike[str]) -> list[HostRows]:
    """Every host of the trace at ``path`` in sorted order, with its rows and its unit."""
    parts = trace_parts(path)
    if all(part.host is not None for part in parts):
        counts: dict[str, int] = {}
        for part in parts:
            counts[part.host] = counts.get(part.host, 0) + open_part(part).metadata.num_rows
        return [HostRows(host, rows, unit) for unit, (host, rows) in enumerate(sorted(counts.items()))]
    counts = {}
    units: dict[str, int] = {}
    unit = -1
    previous_last: str | None = None
    for part in parts:
        parquet = open_part(part)
        sorted_file = file_metadata_of(parquet).get(SORTED_KEY) == "host,seq"
        for index in range(parquet.metadata.num_row_groups):
            hosts = parquet.read_row_group(index, columns=["host"]).column("host")
            names, rows = _run_counts(hosts)
            if not names:
                continue
            continues = sorted_file and names[0] == previous_last
            if unit < 0 or (sorted_file and not continues):
                unit += 1  # a file in another order is read whole: one unit for all of it
            for name, count in zip(names, rows):
                counts[name] = counts.get(name, 0) + count
                units.setdefault(name, unit)
            previous_last = names[-1]
    return [HostRows(host, counts[host], units[host]) for host in sorted(counts)]


def _run_counts(hosts: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    """The distinct hosts of a column in order of first appearance, with their row counts."""
    counts = pc.value_counts(pc.cast(hosts, pa.string()))
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
